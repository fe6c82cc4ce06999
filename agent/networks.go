package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/kuryr-pools/kuryr/config"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
)

// DefaultNetworks gives every pod the [neutron_defaults] project, pod_subnet and
// pod_security_groups (kuryr's "default" subnet, project and security-group drivers). The subnet
// is read from Neutron once, at start, so ADD never waits for it.
type DefaultNetworks struct {
	def PodNetwork
}

// NewDefaultNetworks reads the default pod subnet from Neutron.
func NewDefaultNetworks(ctx context.Context, cfg *config.Config, nc *neutron.Client) (*DefaultNetworks, error) {
	d := cfg.NeutronDefaults
	if d.Project == "" {
		return nil, errors.New("[neutron_defaults] project is required by the default project driver")
	}
	if d.PodSubnet == "" {
		return nil, errors.New("[neutron_defaults] pod_subnet is required by the default subnet driver")
	}
	sub, err := nc.SubnetDetails(ctx, d.PodSubnet)
	if err != nil {
		return nil, fmt.Errorf("[neutron_defaults] pod_subnet %s: %w", d.PodSubnet, err)
	}
	sgs := d.PodSecurityGroups
	if len(sgs) == 0 {
		// Neutron gives a port created without security groups the project's default group:
		// group the pool's ports under the set they really get, or every ADD would rewrite them.
		def, err := nc.DefaultSecurityGroup(ctx, d.Project)
		if err != nil {
			return nil, fmt.Errorf("[neutron_defaults] pod_security_groups is empty: %w", err)
		}
		sgs = []string{def}
	}
	return &DefaultNetworks{def: podNetwork(d.Project, sub, pool.NewSGSet(sgs...))}, nil
}

func podNetwork(project string, sub neutron.SubnetDetails, sgs pool.SGSet) PodNetwork {
	info := SubnetInfo{ID: sub.ID, NetworkID: sub.NetworkID, CIDR: sub.CIDR, GatewayIP: sub.GatewayIP, MTU: sub.MTU}
	for _, r := range sub.HostRoutes {
		info.Routes = append(info.Routes, Route{Dst: r.Destination, GW: r.NextHop})
	}
	return PodNetwork{Project: project, NetworkID: sub.NetworkID, SubnetIDs: []string{sub.ID}, SGs: sgs, Subnet: info}
}

// Resolve returns the default network for every pod.
func (d *DefaultNetworks) Resolve(context.Context, PodRef) (PodNetwork, error) { return d.def, nil }

// Default is the network every pod gets.
func (d *DefaultNetworks) Default() PodNetwork { return d.def }
