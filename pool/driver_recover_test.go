package pool

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestDriverRecover(t *testing.T) {
	f := newFakeBackend()
	f.seed("free-1", drvKey, drvSGa, true) // pre-created by hand, attached
	f.seed("free-2", drvKey, drvSGb, true)
	f.seed("free-3", drvKey2, drvSGa, true)
	f.seed("detached", drvKey, drvSGa, false) // ACTIVE but not on the trunk: deleted
	f.seed("used-1", drvKey, drvSGa, true)
	f.seed("used-2", drvKey2, drvSGa, false) // a pod holds it: kept, reported
	f.seed("cool-1", drvKey, drvSGa, true)
	f.seed("cool-2", drvKey, drvSGa, false) // released and detached: deleted
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1, Cooldown: 10 * time.Second}})

	inUse := map[string]string{"used-1": "c1/eth0", "used-2": "c2/eth0", "gone-1": "c3/eth0"}
	cooling := map[string]time.Time{"cool-1": drvT0.Add(-5 * time.Second), "cool-2": drvT0, "gone-2": drvT0}
	rep := dt.recover(inUse, cooling)

	want := RecoverReport{Listed: 8, Free: 3, InUse: 2, Cooling: 1, Deleting: 2,
		Missing: []string{"gone-1", "gone-2"}, Detached: []string{"used-2"}}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("report\n got %+v\nwant %+v", rep, want)
	}
	f.view(func(f *fakeBackend) {
		if !slices.Equal(f.calls, []string{"list"}) {
			t.Errorf("Recover made calls %q, want exactly one list", f.calls)
		}
	})
	if !dt.d.Ready() {
		t.Error("not ready after Recover")
	}
	for id, st := range map[string]State{"free-1": StateFree, "free-2": StateFree, "free-3": StateFree,
		"detached": StateDeleting, "used-1": StateInUse, "used-2": StateInUse, "cool-1": StateCooling,
		"cool-2": StateDeleting, "gone-1": ""} {
		if got := dt.state(id); got != st {
			t.Errorf("port %s is %q, want %q", id, got, st)
		}
	}
	if dt.d.Node() != drvKey.Node {
		t.Errorf("Node() = %q, want the backend's %q", dt.d.Node(), drvKey.Node)
	}
	if keys := dt.d.Keys(); !slices.Equal(keys, []Key{drvKey, drvKey2}) {
		t.Errorf("keys %v", keys)
	}
	if s := dt.d.Stats(drvKey); s != (Stats{Free: 2, InUse: 1, Cooling: 1, Deleting: 2}) {
		t.Errorf("stats of %s: %+v", drvKey, s)
	}
	if s := dt.d.Stats(drvKey2); s != (Stats{Free: 1, InUse: 1}) {
		t.Errorf("stats of %s: %+v", drvKey2, s)
	}
	// The owners from the checkpoint hold their ports: DEL releases them.
	if p, err := dt.d.Release("c2/eth0"); err != nil || p.ID != "used-2" {
		t.Errorf("Release(c2/eth0) = %s, %v; want used-2", p.ID, err)
	}
	// The free ports are handed out with no Neutron call, by SG group.
	if p := dt.acquire("c9/eth0", drvSGb); p.ID != "free-2" {
		t.Errorf("acquired %s with %s, want free-2", p.ID, drvSGb)
	}

	// Run deletes the detached ports at once, and the cooling port keeps its release time.
	dt.run()
	waitFor(t, "the detached ports deleted", func() bool { return !f.has("detached") && !f.has("cool-2") })
	f.view(func(f *fakeBackend) {
		if len(f.deletes) != 1 || !slices.Equal(f.deletes[0], []string{"cool-2", "detached"}) {
			t.Errorf("deletes %q, want one batch of cool-2 and detached", f.deletes)
		}
	})
	dt.clk.Advance(4 * time.Second)
	dt.tick()
	if st := dt.state("cool-1"); st != StateCooling {
		t.Errorf("cool-1 is %s 9s after its release, want cooling", st)
	}
	dt.clk.Advance(time.Second)
	dt.tick()
	waitFor(t, "cool-1 recycled", func() bool { return dt.state("cool-1") == StateFree })

	// A second Recover re-syncs: a port deleted behind the driver's back is forgotten.
	f.view(func(f *fakeBackend) { delete(f.ports, "free-3") })
	rep = dt.recover(map[string]string{"used-1": "c1/eth0", "free-2": "c9/eth0"}, nil)
	if dt.state("free-3") != "" || rep.Missing != nil || rep.InUse != 2 {
		t.Errorf("after a re-sync: free-3 %q, report %+v", dt.state("free-3"), rep)
	}
}

func TestDriverRecoverInvalidCheckpoint(t *testing.T) {
	f := newFakeBackend()
	f.seed("p1", drvKey, drvSGa, true)
	f.seed("p2", drvKey, drvSGa, true)
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1}})
	// One owner with two ports cannot be: refused, nothing loaded.
	if _, err := dt.d.Recover(dt.ctx, map[string]string{"p1": "c1/eth0", "p2": "c1/eth0"}, nil); err == nil {
		t.Fatal("Recover accepted an owner with two ports")
	}
	if dt.d.Ready() || len(dt.d.Keys()) != 0 {
		t.Errorf("a failed Recover changed the state: ready %v, keys %v", dt.d.Ready(), dt.d.Keys())
	}
}
