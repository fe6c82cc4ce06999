package neutron_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// nsTarget is a Neutron the namespace-driver calls are checked against: fakeneutron, and the real
// neutron-server when KURYR_TEST_NEUTRON names its fixture.
type nsTarget struct {
	name string
	fx   fakeneutron.Fixture
	fake *fakeneutron.Server
}

func nsTargets(t *testing.T) []nsTarget {
	t.Helper()
	s := fakeneutron.New()
	if _, err := s.Start(); err != nil {
		t.Fatalf("start fakeneutron: %v", err)
	}
	t.Cleanup(s.Close)
	fx, err := s.Fixture("kuryr-test")
	if err != nil {
		t.Fatalf("fakeneutron fixture: %v", err)
	}
	out := []nsTarget{{name: "fake", fx: fx, fake: s}}
	if path := os.Getenv("KURYR_TEST_NEUTRON"); path != "" {
		rfx, err := fakeneutron.LoadFixture(path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, nsTarget{name: "real", fx: rfx})
	}
	return out
}

// neutronCall is a raw noauth request to a target, for what the client has no call for
// (routers are the operator's, kuryr only attaches interfaces to them).
func (tg nsTarget) neutronCall(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(tg.fx.Endpoint, "/")+"/v2.0/"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Project-Id", tg.fx.Project)
	req.Header.Set("X-Roles", "admin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// createRouter creates a router deleted at the end of the test.
func (tg nsTarget) createRouter(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	if tg.fake != nil {
		return tg.fake.AddRouter(name, tg.fx.Project)
	}
	var out struct {
		Router struct {
			ID string `json:"id"`
		} `json:"router"`
	}
	if err := tg.neutronCall(ctx, http.MethodPost, "routers", map[string]any{"router": map[string]any{"name": name, "project_id": tg.fx.Project}}, &out); err != nil {
		t.Fatalf("create router: %v", err)
	}
	t.Cleanup(func() {
		if err := tg.neutronCall(context.Background(), http.MethodDelete, "routers/"+out.Router.ID, nil, nil); err != nil {
			t.Errorf("delete router: %v", err)
		}
	})
	return out.Router.ID
}

// routerSubnets are the subnets of a router's interface ports, sorted.
func (tg nsTarget) routerSubnets(t *testing.T, ctx context.Context, routerID string) []string {
	t.Helper()
	if tg.fake != nil {
		return tg.fake.RouterSubnets(routerID)
	}
	var out struct {
		Ports []struct {
			FixedIPs []struct {
				SubnetID string `json:"subnet_id"`
			} `json:"fixed_ips"`
		} `json:"ports"`
	}
	if err := tg.neutronCall(ctx, http.MethodGet, "ports?device_owner=network:router_interface&device_id="+routerID, nil, &out); err != nil {
		t.Fatalf("list router ports: %v", err)
	}
	var subnets []string
	for _, p := range out.Ports {
		for _, f := range p.FixedIPs {
			subnets = append(subnets, f.SubnetID)
		}
	}
	slices.Sort(subnets)
	return subnets
}

// forEachNsTarget runs f against every target; the real one goes through testutil.Require.
func forEachNsTarget(t *testing.T, f func(t *testing.T, ctx context.Context, c *neutron.Client, tg nsTarget)) {
	targets := nsTargets(t)
	if len(targets) == 1 {
		t.Run("real", func(t *testing.T) {
			testutil.Require(t, false, "KURYR_TEST_NEUTRON is not set (run hack/neutron-up.sh and export its output)")
		})
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			t.Cleanup(cancel)
			c, err := neutron.NewClient(ctx, neutron.ClientOptions{AuthType: neutron.AuthNone, EndpointOverride: tg.fx.Endpoint,
				ProjectID: tg.fx.Project, Timeout: 2 * time.Minute}, "kuryr-namespace-test")
			if err != nil {
				t.Fatal(err)
			}
			f(t, ctx, c, tg)
		})
	}
}

func nsName(t *testing.T) string { return fmt.Sprintf("kuryr-nstest-%08x", rand.Uint32()) }

// testPool creates a subnet pool with a random /16 of 10.128.0.0/9 (clear of the fixture's
// 10.10.0.0/16) and deletes it at the end of the test.
func testPool(t *testing.T, ctx context.Context, c *neutron.Client, project, name string) neutron.SubnetPool {
	t.Helper()
	prefix := fmt.Sprintf("10.%d.0.0/16", 128+rand.IntN(127))
	sp, err := c.CreateSubnetPool(ctx, name, project, []string{prefix}, 24)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DeleteSubnetPool(context.WithoutCancel(ctx), sp.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return sp
}

func TestNamespaceNetworkLifecycle(t *testing.T) {
	forEachNsTarget(t, func(t *testing.T, ctx context.Context, c *neutron.Client, tg nsTarget) {
		name := nsName(t)
		sp := testPool(t, ctx, c, tg.fx.Project, name)
		if sp.IPVersion != 4 || sp.DefaultPrefixLen != 24 || len(sp.Prefixes) != 1 {
			t.Fatalf("created pool %+v: want IPv4, default_prefixlen 24, one prefix", sp)
		}
		got, err := c.GetSubnetPool(ctx, sp.ID)
		if err != nil || got.ID != sp.ID || got.DefaultPrefixLen != 24 {
			t.Fatalf("GetSubnetPool = %+v, %v", got, err)
		}
		poolPrefix := netip.MustParsePrefix(sp.Prefixes[0])

		const uid = "0b9c1c1e-6a57-4bfc-9d5c-000000000001"
		n, err := c.CreateNetwork(ctx, neutron.NetworkSpec{Name: name, Description: uid, ProjectID: tg.fx.Project})
		if err != nil {
			t.Fatal(err)
		}
		netGone := false
		t.Cleanup(func() {
			if !netGone {
				_ = c.DeleteNetwork(context.WithoutCancel(ctx), n.ID)
			}
		})
		if n.Name != name || n.Description != uid || n.ProjectID != tg.fx.Project || len(n.Tags) != 0 {
			t.Fatalf("created network %+v", n)
		}
		tags := []string{neutron.ClusterTag(name), "extra-tag"}
		sortedTags := slices.Sorted(slices.Values(tags)) // Neutron lists tags sorted
		if err := c.SetNetworkTags(ctx, n.ID, tags); err != nil {
			t.Fatal(err)
		}
		// Found by name, description (the namespace UID) and tags: exactly this network.
		found, err := c.ListNetworks(ctx, neutron.NetworkFilter{Name: name, Description: uid, Tags: tags})
		if err != nil || len(found) != 1 || found[0].ID != n.ID || !slices.Equal(found[0].Tags, sortedTags) {
			t.Fatalf("ListNetworks by name, description and tags = %+v, %v; want network %s", found, err, n.ID)
		}
		if other, err := c.ListNetworks(ctx, neutron.NetworkFilter{Name: name, Description: "another-uid"}); err != nil || len(other) != 0 {
			t.Fatalf("ListNetworks with another description = %+v, %v; want none", other, err)
		}

		var subs []neutron.ListedSubnet
		for i := range 2 {
			s, err := c.CreateSubnet(ctx, neutron.SubnetSpec{Name: name, NetworkID: n.ID, ProjectID: tg.fx.Project,
				SubnetPoolID: sp.ID, IPVersion: 4})
			if err != nil {
				t.Fatalf("subnet %d: %v", i, err)
			}
			p := netip.MustParsePrefix(s.CIDR)
			if s.SubnetPoolID != sp.ID || p.Bits() != 24 || !poolPrefix.Contains(p.Addr()) || s.NetworkID != n.ID {
				t.Fatalf("subnet %d from pool %s (%s): %+v", i, sp.ID, poolPrefix, s)
			}
			subs = append(subs, s)
		}
		if subs[0].CIDR == subs[1].CIDR {
			t.Fatalf("two subnets from one pool got the same prefix %s", subs[0].CIDR)
		}
		if err := c.SetSubnetTags(ctx, subs[0].ID, tags); err != nil {
			t.Fatal(err)
		}
		listed, err := c.ListSubnets(ctx, neutron.SubnetFilter{NetworkID: n.ID, Tags: tags})
		if err != nil || len(listed) != 1 || listed[0].ID != subs[0].ID || listed[0].SubnetPoolID != sp.ID {
			t.Fatalf("ListSubnets by network and tags = %+v, %v; want subnet %s", listed, err, subs[0].ID)
		}

		// A pool with allocations cannot go (400 SubnetPoolDeleteError).
		var ae *neutron.APIError
		if err := c.DeleteSubnetPool(ctx, sp.ID); !errors.As(err, &ae) || ae.Type != "SubnetPoolDeleteError" {
			t.Fatalf("DeleteSubnetPool with allocations = %v; want SubnetPoolDeleteError", err)
		}
		// A network with a port cannot go (409 NetworkInUse).
		ps, err := c.CreatePorts(ctx, []neutron.PortSpec{{NetworkID: n.ID, ProjectID: tg.fx.Project, SubnetIDs: []string{subs[0].ID},
			Name: "nstest", DeviceOwner: "compute:kuryr", Tags: []string{neutron.ClusterTag(name)}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteNetwork(ctx, n.ID); !errors.Is(err, neutron.ErrConflict) {
			t.Fatalf("DeleteNetwork with a port = %v; want ErrConflict", err)
		}
		if failed := c.DeletePorts(ctx, []string{ps[0].ID}); len(failed) != 0 {
			t.Fatal(failed)
		}
		// Without ports the network goes with its subnets; again is fine (404 is done).
		for i := range 2 {
			if err := c.DeleteNetwork(ctx, n.ID); err != nil {
				t.Fatalf("DeleteNetwork #%d: %v", i+1, err)
			}
		}
		netGone = true
		if left, err := c.ListSubnets(ctx, neutron.SubnetFilter{NetworkID: n.ID}); err != nil || len(left) != 0 {
			t.Fatalf("subnets of the deleted network: %+v, %v", left, err)
		}
		if left, err := c.ListSubnets(ctx, neutron.SubnetFilter{SubnetPoolID: sp.ID}); err != nil || len(left) != 0 {
			t.Fatalf("subnets of the pool after the network went: %+v, %v", left, err)
		}
		if err := c.DeleteSubnet(ctx, subs[1].ID); err != nil {
			t.Fatalf("DeleteSubnet of a subnet already gone: %v", err)
		}
	})
}

func TestCreateSubnetErrors(t *testing.T) {
	forEachNsTarget(t, func(t *testing.T, ctx context.Context, c *neutron.Client, tg nsTarget) {
		name := nsName(t)
		prefix := fmt.Sprintf("10.%d.%d.0/23", 128+rand.IntN(127), 2*rand.IntN(128))
		sp, err := c.CreateSubnetPool(ctx, name, tg.fx.Project, []string{prefix}, 24)
		if err != nil {
			t.Fatal(err)
		}
		n, err := c.CreateNetwork(ctx, neutron.NetworkSpec{Name: name, ProjectID: tg.fx.Project})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx := context.WithoutCancel(ctx)
			if err := c.DeleteNetwork(ctx, n.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
			if err := c.DeleteSubnetPool(ctx, sp.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		spec := neutron.SubnetSpec{Name: name, NetworkID: n.ID, ProjectID: tg.fx.Project, SubnetPoolID: sp.ID, IPVersion: 4}

		v6 := spec
		v6.IPVersion = 6
		var ae *neutron.APIError
		if _, err := c.CreateSubnet(ctx, v6); !errors.As(err, &ae) || ae.Status != 400 {
			t.Errorf("IPv6 subnet from an IPv4 pool: %v; want 400", err)
		}
		missing := spec
		missing.SubnetPoolID = "5a1c0de0-0000-4000-8000-000000000000"
		if _, err := c.CreateSubnet(ctx, missing); !errors.Is(err, neutron.ErrNotFound) {
			t.Errorf("subnet from a pool that does not exist: %v; want ErrNotFound", err)
		}
		// A /23 holds two /24: the third allocation fails (Neutron answers 500 SubnetAllocationError).
		for i := range 2 {
			if _, err := c.CreateSubnet(ctx, spec); err != nil {
				t.Fatalf("allocation %d of 2: %v", i+1, err)
			}
		}
		if _, err := c.CreateSubnet(ctx, spec); !errors.As(err, &ae) || ae.Type != "SubnetAllocationError" {
			t.Errorf("allocation from an exhausted pool: %v; want SubnetAllocationError", err)
		}
	})
}

func TestRouterInterface(t *testing.T) {
	forEachNsTarget(t, func(t *testing.T, ctx context.Context, c *neutron.Client, tg nsTarget) {
		has, err := c.HasExtension(ctx, "router")
		if err != nil {
			t.Fatal(err)
		}
		if tg.fake != nil {
			if has {
				t.Fatal("fakeneutron has the router extension by default; the test server has no L3 plugin")
			}
			if err := c.RemoveRouterInterface(ctx, "f0000000-0000-4000-8000-000000000000", tg.fx.PodSubnet); err != nil {
				// Without the extension /routers is an unknown resource (404): nothing to detach.
				t.Fatalf("RemoveRouterInterface without the router extension: %v", err)
			}
			if _, err := c.AddRouterInterface(ctx, "f0000000-0000-4000-8000-000000000000", tg.fx.PodSubnet); !errors.Is(err, neutron.ErrNotFound) {
				t.Fatalf("AddRouterInterface without the router extension: %v; want ErrNotFound", err)
			}
			tg.fake.SetExtension("router", true)
		} else {
			testutil.Require(t, has, "the real neutron-server has no router extension (hack/neutron-up.sh sets service_plugins = router,trunk)")
		}
		name := nsName(t)
		sp := testPool(t, ctx, c, tg.fx.Project, name)
		n, err := c.CreateNetwork(ctx, neutron.NetworkSpec{Name: name, ProjectID: tg.fx.Project})
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.CreateSubnet(ctx, neutron.SubnetSpec{Name: name, NetworkID: n.ID, ProjectID: tg.fx.Project, SubnetPoolID: sp.ID, IPVersion: 4})
		if err != nil {
			t.Fatal(err)
		}
		routerID := tg.createRouter(t, ctx, name)

		ri, err := c.AddRouterInterface(ctx, routerID, s.ID)
		if err != nil || ri.PortID == "" || ri.SubnetID != s.ID || ri.RouterID != routerID {
			t.Fatalf("AddRouterInterface = %+v, %v", ri, err)
		}
		if again, err := c.AddRouterInterface(ctx, routerID, s.ID); err != nil || again.PortID != "" {
			t.Fatalf("AddRouterInterface a second time = %+v, %v; want success without a new port", again, err)
		}
		if got := tg.routerSubnets(t, ctx, routerID); !slices.Equal(got, []string{s.ID}) {
			t.Fatalf("router subnets %v, want [%s]", got, s.ID)
		}
		// The interface port holds the gateway: subnet and network cannot go while it is there,
		// and it cannot be deleted through the port API.
		var ae *neutron.APIError
		if err := c.DeleteSubnet(ctx, s.ID); !errors.Is(err, neutron.ErrConflict) {
			t.Fatalf("DeleteSubnet with a router interface: %v; want ErrConflict", err)
		}
		if err := c.DeleteNetwork(ctx, n.ID); !errors.Is(err, neutron.ErrConflict) {
			t.Fatalf("DeleteNetwork with a router interface: %v; want ErrConflict", err)
		}
		if err := c.DeletePort(ctx, ri.PortID); !errors.As(err, &ae) || ae.Type != "ServicePortInUse" {
			t.Fatalf("DeletePort of a router interface: %v; want ServicePortInUse (as the real server answers)", err)
		}
		for i := range 2 {
			if err := c.RemoveRouterInterface(ctx, routerID, s.ID); err != nil {
				t.Fatalf("RemoveRouterInterface #%d: %v", i+1, err)
			}
		}
		if got := tg.routerSubnets(t, ctx, routerID); len(got) != 0 {
			t.Fatalf("router subnets after removal: %v", got)
		}
		if err := c.DeleteNetwork(ctx, n.ID); err != nil {
			t.Fatal(err)
		}
	})
}

func TestListTrunksFollowsPages(t *testing.T) {
	forEachNsTarget(t, func(t *testing.T, ctx context.Context, c *neutron.Client, tg nsTarget) {
		all, err := c.ListTrunks(ctx, neutron.TrunkFilter{})
		if err != nil {
			t.Fatal(err)
		}
		paged, err := c.ListTrunks(ctx, neutron.TrunkFilter{PageSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		ids := func(ts []neutron.Trunk) []string {
			var out []string
			for _, t := range ts {
				out = append(out, t.ID)
			}
			slices.Sort(out)
			return out
		}
		if len(all) < len(tg.fx.Trunks) || !slices.Equal(ids(all), ids(paged)) {
			t.Fatalf("trunks in one page %v, one per page %v (fixture has %d)", ids(all), ids(paged), len(tg.fx.Trunks))
		}
		// A subport is mapped to its trunk.
		tr := tg.fx.Trunks[0]
		ps, err := c.CreatePorts(ctx, []neutron.PortSpec{{NetworkID: tg.fx.PodNetwork, ProjectID: tg.fx.Project,
			SubnetIDs: []string{tg.fx.PodSubnet}, Name: "nstest-subport", DeviceOwner: "compute:kuryr"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.DeletePorts(context.WithoutCancel(ctx), []string{ps[0].ID}) })
		if _, err := c.AttachPorts(ctx, tr.Trunk, []string{ps[0].ID}, 0); err != nil {
			t.Fatal(err)
		}
		ts, err := c.ListTrunks(ctx, neutron.TrunkFilter{PageSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		if got := neutron.SubportTrunks(ts)[ps[0].ID]; got != tr.Trunk {
			t.Fatalf("SubportTrunks[%s] = %q, want trunk %s", ps[0].ID, got, tr.Trunk)
		}
	})
}

func TestDeletePortIf(t *testing.T) {
	forEachNsTarget(t, func(t *testing.T, ctx context.Context, c *neutron.Client, tg nsTarget) {
		ps, err := c.CreatePorts(ctx, []neutron.PortSpec{{NetworkID: tg.fx.PodNetwork, ProjectID: tg.fx.Project,
			SubnetIDs: []string{tg.fx.PodSubnet}, Name: "nstest-deleteif", DeviceOwner: "compute:kuryr"}})
		if err != nil {
			t.Fatal(err)
		}
		p := ps[0]
		t.Cleanup(func() { c.DeletePorts(context.WithoutCancel(ctx), []string{p.ID}) })
		name := "renamed"
		up, err := c.UpdatePort(ctx, p.ID, 0, neutron.PortUpdate{Name: &name})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.DeletePortIf(ctx, p.ID, p.RevisionNumber); !errors.Is(err, neutron.ErrRevisionMismatch) {
			t.Fatalf("DeletePortIf at the revision before an update: %v; want ErrRevisionMismatch", err)
		}
		if _, err := c.GetPort(ctx, p.ID); err != nil {
			t.Fatalf("the port went although its revision changed: %v", err)
		}
		// A subport cannot be deleted (409) until it is detached.
		tr := tg.fx.Trunks[1].Trunk
		if _, err := c.AttachPorts(ctx, tr, []string{p.ID}, 0); err != nil {
			t.Fatal(err)
		}
		cur, err := c.GetPort(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.DeletePortIf(ctx, p.ID, cur.RevisionNumber); !errors.Is(err, neutron.ErrConflict) {
			t.Fatalf("DeletePortIf of a subport: %v; want ErrConflict", err)
		}
		if err := c.RemoveSubports(ctx, tr, []string{p.ID}); err != nil {
			t.Fatal(err)
		}
		if cur, err = c.GetPort(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
		if cur.RevisionNumber < up.RevisionNumber {
			t.Fatalf("revision went back: %d < %d", cur.RevisionNumber, up.RevisionNumber)
		}
		for i := range 2 {
			if err := c.DeletePortIf(ctx, p.ID, cur.RevisionNumber); err != nil {
				t.Fatalf("DeletePortIf #%d at the current revision: %v", i+1, err)
			}
		}
		if _, err := c.GetPort(ctx, p.ID); !errors.Is(err, neutron.ErrNotFound) {
			t.Fatalf("port after DeletePortIf: %v; want ErrNotFound", err)
		}
	})
}
