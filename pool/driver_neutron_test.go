package pool_test

// The Driver over the real neutron backends: against the in-memory fakeneutron always, and against
// a real neutron-server when KURYR_TEST_NEUTRON names its fixture (hack/neutron-up.sh). Each test
// works on a trunk of its own with its own cluster and node tags, and deletes what it made.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/pool"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

type neutronEnv struct {
	t       *testing.T
	ctx     context.Context
	fx      fakeneutron.Fixture
	c       *neutron.Client // the driver's: its Stats are the driver's requests
	plain   *neutron.Client // setup and checks
	cluster string
	node    string
	parent  neutron.Port
	trunk   neutron.Trunk
}

func fakeNeutronFixture(t *testing.T) fakeneutron.Fixture {
	s := fakeneutron.New()
	if _, err := s.Start(); err != nil {
		t.Fatalf("start fakeneutron: %v", err)
	}
	t.Cleanup(s.Close)
	fx, err := s.Fixture("kuryr-test")
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

func realNeutronFixture(t *testing.T) fakeneutron.Fixture {
	path := os.Getenv("KURYR_TEST_NEUTRON")
	testutil.Require(t, path != "", "KURYR_TEST_NEUTRON is not set (run hack/neutron-up.sh and export its output)")
	fx, err := fakeneutron.LoadFixture(path)
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

// forEachNeutron runs fn against fakeneutron and, when configured, the real server.
func forEachNeutron(t *testing.T, fn func(t *testing.T, e *neutronEnv)) {
	for _, tg := range []struct {
		name string
		fx   func(*testing.T) fakeneutron.Fixture
	}{{"fake", fakeNeutronFixture}, {"real", realNeutronFixture}} {
		t.Run(tg.name, func(t *testing.T) { fn(t, newNeutronEnv(t, tg.fx(t))) })
	}
}

func newNeutronEnv(t *testing.T, fx fakeneutron.Fixture) *neutronEnv {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	e := &neutronEnv{t: t, ctx: ctx, fx: fx, cluster: "drv-" + id, node: "drv-node-" + id}
	e.c, e.plain = e.client(), e.client()

	ps, err := e.plain.CreatePorts(ctx, []neutron.PortSpec{{NetworkID: fx.WorkerNetwork, ProjectID: fx.Project,
		SubnetIDs: []string{fx.WorkerSubnet}, Name: "drv-parent-" + id, DeviceOwner: "compute:nova", DeviceID: "drv-vm-" + id}})
	if err != nil {
		t.Fatalf("create the parent port: %v", err)
	}
	e.parent = ps[0]
	if e.trunk, err = e.plain.CreateTrunk(ctx, "drv-trunk-"+id, e.parent.ID, fx.Project); err != nil {
		_ = e.plain.DeletePort(ctx, e.parent.ID)
		t.Fatalf("create the trunk: %v", err)
	}
	t.Cleanup(e.cleanup)
	return e
}

func (e *neutronEnv) client() *neutron.Client {
	c, err := neutron.NewClient(e.ctx, neutron.ClientOptions{AuthType: neutron.AuthNone, EndpointOverride: e.fx.Endpoint,
		ProjectID: e.fx.Project, Timeout: 5 * time.Minute}, "kuryr-driver-test")
	if err != nil {
		e.t.Fatalf("NewClient: %v", err)
	}
	return c
}

// cleanup detaches every subport, deletes the trunk, the parent and every port of the test.
func (e *neutronEnv) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if tr, err := e.plain.GetTrunk(ctx, e.trunk.ID); err == nil && len(tr.SubPorts) > 0 {
		ids := make([]string, len(tr.SubPorts))
		for i, s := range tr.SubPorts {
			ids[i] = s.PortID
		}
		if err := e.plain.RemoveSubports(ctx, e.trunk.ID, ids); err != nil {
			e.t.Errorf("cleanup: remove subports: %v", err)
		}
	}
	if err := e.plain.DeleteTrunk(ctx, e.trunk.ID); err != nil {
		e.t.Errorf("cleanup: %v", err)
	}
	ids := []string{e.parent.ID}
	for _, p := range e.tagged(ctx) {
		ids = append(ids, p.ID)
	}
	if failed := e.plain.DeletePorts(ctx, ids); len(failed) > 0 {
		e.t.Errorf("cleanup: ports left behind: %v", failed)
	}
}

func (e *neutronEnv) tagged(ctx context.Context) []neutron.Port {
	ps, err := e.plain.ListPorts(ctx, neutron.PortFilter{Tags: []string{neutron.ClusterTag(e.cluster)}})
	if err != nil {
		e.t.Fatalf("list the test's ports: %v", err)
	}
	return ps
}

func (e *neutronEnv) nested() *neutron.NestedBackend {
	b, err := neutron.NewNestedBackend(e.c, neutron.NestedOptions{NodeIP: e.parent.FixedIPs[0].IPAddress,
		WorkerSubnets: []string{e.fx.WorkerSubnet}, ClusterName: e.cluster, NodeName: e.node})
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *neutronEnv) key(b pool.Backend) pool.Key {
	return pool.Key{Node: b.Node(), Project: e.fx.Project, Network: e.fx.PodNetwork}
}

func (e *neutronEnv) subports() map[string]int {
	tr, err := e.plain.GetTrunk(e.ctx, e.trunk.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]int{}
	for _, s := range tr.SubPorts {
		m[s.PortID] = s.SegmentationID
	}
	return m
}

// requests counts the driver client's requests made by fn.
func (e *neutronEnv) requests(fn func()) int {
	before := e.c.Stats()
	fn()
	return e.c.Stats().Sub(before).Requests()
}

// runDriver starts d.Run until the test ends.
func runDriver(t *testing.T, ctx context.Context, d *pool.Driver) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute) // a bulk create on the shared 2-core machine can take a minute
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDriverNestedNeutron(t *testing.T) {
	forEachNeutron(t, func(t *testing.T, e *neutronEnv) {
		// Pre-created by hand: two ports attached to the trunk, one tagged for the node but detached.
		specs := make([]neutron.PortSpec, 3)
		for i := range specs {
			specs[i] = neutron.PortSpec{NetworkID: e.fx.PodNetwork, ProjectID: e.fx.Project, SubnetIDs: []string{e.fx.PodSubnet},
				Name: pool.AvailablePortName, DeviceOwner: pool.DeviceOwnerKuryr, SecurityGroups: e.fx.SecurityGroups,
				Tags: []string{neutron.ClusterTag(e.cluster), neutron.NodeTag(e.node)}}
		}
		pre, err := e.plain.CreatePorts(e.ctx, specs)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.plain.AttachPorts(e.ctx, e.trunk.ID, []string{pre[0].ID, pre[1].ID}, 3); err != nil {
			t.Fatal(err)
		}

		b := e.nested()
		key := e.key(b)
		d := pool.NewDriver(b, pool.DriverOptions{Limits: pool.Limits{Min: 5, Max: 12, Batch: 10},
			UpdateFrequency: 100 * time.Millisecond})
		var rep pool.RecoverReport
		n := e.requests(func() {
			if rep, err = d.Recover(e.ctx, nil, nil); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("Recover: %d requests, report %+v", n, rep)
		if rep.Free != 2 || rep.Deleting != 1 || n > 4 {
			t.Errorf("Recover: %d requests, report %+v; want 2 free, 1 deleting, at most 4 requests", n, rep)
		}
		for _, p := range pre[:2] {
			if st, _ := d.PortState(p.ID); st != pool.StateFree {
				t.Errorf("pre-created port %s is %q, want free", p.ID, st)
			}
		}

		sgs := pool.NewSGSet(e.fx.SecurityGroups...) // explicit: "" would mean Neutron's default at creation
		d.EnsurePool(key, []string{e.fx.PodSubnet}, sgs)
		runDriver(t, e.ctx, d)
		// 2 loaded < Min 5: one batch of 10 (Max 12 allows it), and the detached port deleted.
		eventually(t, "the pool filled", func() bool {
			s := d.Stats(key)
			return s.Free == 12 && s.InFlight == 0 && s.Deleting == 0
		})
		subs := e.subports()
		vlans := map[int]bool{}
		for _, v := range subs {
			vlans[v] = true
		}
		if len(subs) != 12 || len(vlans) != 12 {
			t.Errorf("trunk has %d subports with %d distinct VLANs, want 12 and 12", len(subs), len(vlans))
		}
		for _, p := range e.tagged(e.ctx) {
			if p.ID == pre[2].ID {
				t.Errorf("the detached pre-created port %s still exists", p.ID)
			}
			if _, on := subs[p.ID]; !on || p.Name != pool.AvailablePortName || !slices.Contains(p.Tags, neutron.NodeTag(e.node)) {
				t.Errorf("port %s: name %q, tags %v, on the trunk %v", p.ID, p.Name, p.Tags, on)
			}
		}

		// A free port is handed out with no request at all.
		var got pool.Port
		if n := e.requests(func() {
			if got, err = d.Acquire(e.ctx, pool.AcquireRequest{Key: key, SubnetIDs: []string{e.fx.PodSubnet}, SGs: sgs, Owner: "c1/eth0"}); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("Acquire with free ports made %d requests", n)
		}
		if got.VLAN == 0 || got.VLAN != subs[got.ID] || got.MAC == "" || len(got.FixedIPs) == 0 {
			t.Errorf("acquired port %+v lacks what plugging needs (VLAN on the trunk %d)", got, subs[got.ID])
		}
		d.MarkInUse(got, "ns/pod1", "uid-1")
		eventually(t, "the port marked in use", func() bool {
			p, err := e.plain.GetPort(e.ctx, got.ID)
			return err == nil && p.Name == "ns/pod1" && p.DeviceID == "uid-1"
		})

		// Released, cooled (cooldown 0), recycled by a tick: named available-port again.
		if _, err := d.Release("c1/eth0"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the port recycled", func() bool {
			st, _ := d.PortState(got.ID)
			p, err := e.plain.GetPort(e.ctx, got.ID)
			return st == pool.StateFree && err == nil && p.Name == pool.AvailablePortName && p.DeviceID == ""
		})

		// Forced past Max: the tick deletes the surplus, detaching the subports first.
		created, capped, err := d.Populate(e.ctx, key, 4, true)
		if err != nil || created != 4 || capped != 0 {
			t.Fatalf("forced Populate = %d, %d, %v", created, capped, err)
		}
		eventually(t, "the surplus deleted", func() bool {
			s := d.Stats(key)
			return s.Free == 12 && s.Deleting == 0 && len(e.subports()) == 12 && len(e.tagged(e.ctx)) == 12
		})

		// A restart: a new driver loads the same ports, the checkpoint's port in use.
		held, err := d.Acquire(e.ctx, pool.AcquireRequest{Key: key, SubnetIDs: []string{e.fx.PodSubnet}, SGs: sgs, Owner: "c2/eth0"})
		if err != nil {
			t.Fatal(err)
		}
		d2 := pool.NewDriver(e.nested(), pool.DriverOptions{Limits: pool.Limits{Min: 5, Max: 12, Batch: 10}})
		rep, err = d2.Recover(e.ctx, map[string]string{held.ID: "c2/eth0", "gone-port": "c3/eth0"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Free != 11 || rep.InUse != 1 || !slices.Equal(rep.Missing, []string{"gone-port"}) {
			t.Errorf("restart: report %+v, want 11 free, 1 in use, gone-port missing", rep)
		}

		// Free: every free port deleted and detached; the held one stays.
		deleted, err := d2.Free(e.ctx, key)
		if err != nil || deleted != 11 {
			t.Errorf("Free = %d, %v; want 11", deleted, err)
		}
		if subs := e.subports(); len(subs) != 1 || subs[held.ID] == 0 {
			t.Errorf("trunk after Free: %v, want only %s", subs, held.ID)
		}
	})
}

func TestDriverNoopNeutron(t *testing.T) {
	forEachNeutron(t, func(t *testing.T, e *neutronEnv) {
		b := e.nested()
		key := e.key(b)
		d := pool.NewDriver(b, pool.DriverOptions{Noop: true, Limits: pool.Limits{Min: 5, Batch: 10}})
		if _, err := d.Recover(e.ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		d.EnsurePool(key, []string{e.fx.PodSubnet}, pool.NewSGSet())
		runDriver(t, e.ctx, d)
		var ports []pool.Port
		for _, o := range []string{"c1/eth0", "c2/eth0"} {
			p, err := d.Acquire(e.ctx, pool.AcquireRequest{Key: key, SubnetIDs: []string{e.fx.PodSubnet}, Owner: o})
			if err != nil {
				t.Fatal(err)
			}
			ports = append(ports, p)
		}
		if subs := e.subports(); len(subs) != 2 || subs[ports[0].ID] != ports[0].VLAN || subs[ports[1].ID] != ports[1].VLAN {
			t.Errorf("trunk %v, want the two pods' ports %s/%d %s/%d", subs, ports[0].ID, ports[0].VLAN, ports[1].ID, ports[1].VLAN)
		}
		if n := len(e.tagged(e.ctx)); n != 2 {
			t.Errorf("%d ports in Neutron, want one per pod (no pool)", n)
		}
		for _, o := range []string{"c1/eth0", "c2/eth0"} {
			if _, err := d.Release(o); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "the ports deleted", func() bool { return len(e.tagged(e.ctx)) == 0 && len(e.subports()) == 0 })
	})
}

func TestDriverBareMetalNeutron(t *testing.T) {
	forEachNeutron(t, func(t *testing.T, e *neutronEnv) {
		b, err := neutron.NewBareMetalBackend(e.c, neutron.BareMetalOptions{NodeName: e.node, ClusterName: e.cluster,
			IgnoreBindingFailure: true})
		if err != nil {
			t.Fatal(err)
		}
		key := e.key(b)
		d := pool.NewDriver(b, pool.DriverOptions{Limits: pool.Limits{Min: 2, Batch: 3}})
		if _, err := d.Recover(e.ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		d.EnsurePool(key, []string{e.fx.PodSubnet}, pool.NewSGSet())
		runDriver(t, e.ctx, d)
		eventually(t, "the pool filled", func() bool { s := d.Stats(key); return s.Free == 3 && s.InFlight == 0 })
		ps := e.tagged(e.ctx)
		if len(ps) != 3 {
			t.Fatalf("%d ports in Neutron, want 3", len(ps))
		}
		for _, p := range ps {
			if p.HostID != e.node || p.DeviceOwner != pool.DeviceOwnerKuryr {
				t.Errorf("port %s: host %q owner %q, want bound to %s as %s", p.ID, p.HostID, p.DeviceOwner, e.node, pool.DeviceOwnerKuryr)
			}
		}
		// A restart loads them all.
		d2 := pool.NewDriver(b, pool.DriverOptions{Limits: pool.Limits{Min: 2, Batch: 3}})
		rep, err := d2.Recover(e.ctx, nil, nil)
		if err != nil || rep.Free != 3 {
			t.Errorf("restart: %+v, %v; want 3 free", rep, err)
		}
	})
}
