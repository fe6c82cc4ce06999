package neutron_test

import (
	"context"
	"testing"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
)

func TestDefaultSecurityGroupIsWhatNeutronGivesNewPorts(t *testing.T) {
	srv := fakeneutron.New()
	url, err := srv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fx, err := srv.Fixture("sg-test")
	if err != nil {
		t.Fatal(err)
	}
	c, err := neutron.NewClient(context.Background(), neutron.ClientOptions{AuthType: "none", EndpointOverride: url, ProjectID: fx.Project}, "test")
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.DefaultSecurityGroup(context.Background(), fx.Project)
	if err != nil {
		t.Fatal(err)
	}
	ports, err := c.CreatePorts(context.Background(), []neutron.PortSpec{{NetworkID: fx.PodNetwork, ProjectID: fx.Project, Name: "sg-probe"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.DeletePorts(context.Background(), []string{ports[0].ID})
	if len(ports[0].SecurityGroups) != 1 || ports[0].SecurityGroups[0] != id {
		t.Errorf("a port created without security groups has %v; DefaultSecurityGroup = %s", ports[0].SecurityGroups, id)
	}
}
