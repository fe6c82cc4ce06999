package agent

import (
	"context"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/config"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
)

// embeddedProject is the project of the embedded Neutron's fixture.
const embeddedProject = "kuryr-demo"

// StartEmbeddedNeutron serves the in-memory Neutron stand-in (contract-tested against the real
// neutron-server) on loopback with the test fixture, and points cfg at it: [neutron] without
// Keystone, [neutron_defaults] project, subnet and security groups, [pod_vif_nested] worker subnet.
// It returns the node IP of the first fixture trunk, for nested mode. The server stops with ctx.
func StartEmbeddedNeutron(ctx context.Context, cfg *config.Config, nodeName string) (string, error) {
	srv := fakeneutron.New()
	url, err := srv.Start()
	if err != nil {
		return "", err
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fx, err := srv.Fixture(embeddedProject)
	if err != nil {
		return "", fmt.Errorf("embedded Neutron fixture: %w", err)
	}
	cfg.Neutron.AuthType, cfg.Neutron.EndpointOverride, cfg.Neutron.ProjectID = "none", url, fx.Project
	cfg.NeutronDefaults.Project, cfg.NeutronDefaults.PodSubnet = fx.Project, fx.PodSubnet
	cfg.NeutronDefaults.PodSecurityGroups = fx.SecurityGroups
	cfg.PodVIFNested.WorkerNodesSubnets = []string{fx.WorkerSubnet}
	klog.FromContext(ctx).Info("serving an embedded Neutron stand-in", "endpoint", url, "project", fx.Project,
		"podSubnet", fx.PodSubnet, "podSubnetCIDR", fx.PodSubnetCIDR, "node", nodeName)
	return fx.Trunks[0].IP, nil
}
