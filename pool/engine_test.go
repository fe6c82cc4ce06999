package pool

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	keyA = Key{Node: "10.0.0.6", Project: "proj", Network: "net-a"}
	keyB = Key{Node: "10.0.0.6", Project: "proj", Network: "net-b"}
	sg1  = NewSGSet("sg-1")
	sg2  = NewSGSet("sg-2")
	sg12 = NewSGSet("sg-2", "sg-1")
)

func mkPort(id string, k Key, sgs SGSet) Port {
	return Port{
		ID: id, Key: k, SGs: sgs, MAC: "fa:16:3e:00:00:01",
		FixedIPs: []FixedIP{{SubnetID: "subnet-1", IP: "10.1.0.5"}},
	}
}

func newTestEngine(t *testing.T, l Limits) (*Engine, *engClock) {
	t.Helper()
	clk := newEngClock()
	e := NewEngine(l, clk)
	t.Cleanup(func() {
		if err := checkEngine(e); err != nil {
			t.Errorf("invariants at the end: %v", err)
		}
	})
	return e, clk
}

// addFree adds free ports of keyA with sgs, one at a time in the order given.
func addFree(t *testing.T, e *Engine, sgs SGSet, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if added := e.AddFree(mkPort(id, keyA, sgs)); !added[0] {
			t.Fatalf("AddFree(%s): not added", id)
		}
	}
}

// cool puts a port of keyA in cooling, released now.
func cool(t *testing.T, e *Engine, id string) {
	t.Helper()
	if err := e.AddInUse(mkPort(id, keyA, sg1), "owner-"+id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Release("owner-" + id); err != nil {
		t.Fatal(err)
	}
}

func acquireID(t *testing.T, e *Engine, k Key, sgs SGSet, owner string) string {
	t.Helper()
	g, err := e.Acquire(k, sgs, owner)
	if err != nil {
		t.Fatalf("Acquire(%s, %q, %s): %v", k, sgs, owner, err)
	}
	return g.Port.ID
}

func stateOf(e *Engine, id string) State {
	_, st, ok := e.Get(id)
	if !ok {
		return "gone"
	}
	return st
}

func portIDs(ports []Port) []string {
	ids := []string{}
	for _, p := range ports {
		ids = append(ids, p.ID)
	}
	return ids
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestAcquireLIFOWithinGroup(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Batch: 1})
	addFree(t, e, sg1, "p1", "p2", "p3")
	var got []string
	for i := range 3 {
		got = append(got, acquireID(t, e, keyA, sg1, fmt.Sprintf("c%d/eth0", i)))
	}
	if want := []string{"p3", "p2", "p1"}; !slices.Equal(got, want) {
		t.Fatalf("acquired %v, want most recently added first %v", got, want)
	}
	if _, err := e.Acquire(keyA, sg1, "c9/eth0"); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Acquire on an empty pool: %v, want ErrEmpty", err)
	}
}

func TestAcquireGroupChoice(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, e *Engine)
		sgs       SGSet
		wantID    string
		wantSGs   SGSet // Port.SGs of the grant: what the port has in Neutron now
		wantRewrt bool
	}{
		{
			name:    "exact group",
			setup:   func(t *testing.T, e *Engine) { addFree(t, e, sg1, "x1"); addFree(t, e, sg2, "y1") },
			sgs:     sg1,
			wantID:  "x1",
			wantSGs: sg1,
		},
		{
			name: "no such group: least recently updated group, with rewrite",
			setup: func(t *testing.T, e *Engine) {
				addFree(t, e, sg1, "x1")
				addFree(t, e, sg2, "y1")
				addFree(t, e, sg1, "x2") // sg1 is now the most recently updated group
			},
			sgs:       sg12,
			wantID:    "y1",
			wantSGs:   sg2,
			wantRewrt: true,
		},
		{
			name: "exact group empty: takes the top of the other group",
			setup: func(t *testing.T, e *Engine) {
				addFree(t, e, sg2, "y1", "y2")
				addFree(t, e, sg1, "x1")
				acquireID(t, e, keyA, sg1, "other/eth0")
			},
			sgs:       sg1,
			wantID:    "y2",
			wantSGs:   sg2,
			wantRewrt: true,
		},
		{
			name: "taking a port does not update its group; returning one does",
			setup: func(t *testing.T, e *Engine) {
				addFree(t, e, sg1, "x1", "x2")
				addFree(t, e, sg2, "y1")
				id := acquireID(t, e, keyA, sg1, "other/eth0") // x2; sg1 stays the older group
				if err := e.Abort(id); err != nil {            // x2 back: sg1 is now the newer group
					t.Fatal(err)
				}
			},
			sgs:       NewSGSet(),
			wantID:    "y1",
			wantSGs:   sg2,
			wantRewrt: true,
		},
		{
			name: "empty SG set is a group like any other",
			setup: func(t *testing.T, e *Engine) {
				addFree(t, e, NewSGSet(), "n1")
				addFree(t, e, sg1, "x1")
			},
			sgs:     "",
			wantID:  "n1",
			wantSGs: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, Limits{Batch: 1})
			tc.setup(t, e)
			g, err := e.Acquire(keyA, tc.sgs, "pod/eth0")
			if err != nil {
				t.Fatal(err)
			}
			if g.Port.ID != tc.wantID || g.Port.SGs != tc.wantSGs || g.RewriteSGs != tc.wantRewrt {
				t.Fatalf("grant %s SGs %q rewrite %v, want %s SGs %q rewrite %v",
					g.Port.ID, g.Port.SGs, g.RewriteSGs, tc.wantID, tc.wantSGs, tc.wantRewrt)
			}
			if p, ok := e.Owner("pod/eth0"); !ok || p.ID != tc.wantID {
				t.Fatalf("Owner: %s %v", p.ID, ok)
			}
		})
	}
}

func TestAcquireIdempotentAndRewrite(t *testing.T) {
	e, clk := newTestEngine(t, Limits{Batch: 1, Cooldown: time.Second})
	addFree(t, e, sg1, "x1", "x2")
	g1, err := e.Acquire(keyA, sg2, "c1/eth0")
	if err != nil || g1.Port.ID != "x2" || !g1.RewriteSGs {
		t.Fatalf("first grant %+v %v", g1, err)
	}
	g2, err := e.Acquire(keyA, sg2, "c1/eth0")
	if err != nil || !reflect.DeepEqual(g1, g2) {
		t.Fatalf("repeated Acquire: %+v %v, want the same grant %+v", g2, err, g1)
	}
	if st := e.Stats(keyA); st.InUse != 1 || st.Free != 1 {
		t.Fatalf("repeated Acquire took a second port: %+v", st)
	}
	if _, err := e.Acquire(keyB, sg2, "c1/eth0"); !errors.Is(err, ErrConflict) {
		t.Fatalf("Acquire in another key by an owner holding a port: %v, want ErrConflict", err)
	}
	if err := e.SetSGs("x2", sg2); err != nil {
		t.Fatal(err)
	}
	g3, err := e.Acquire(keyA, sg2, "c1/eth0")
	if err != nil || g3.RewriteSGs || g3.Port.SGs != sg2 {
		t.Fatalf("grant after SetSGs: %+v %v, want no rewrite and SGs %q", g3, err, sg2)
	}
	// The port now belongs to the sg2 group once it is back.
	if _, err := e.Release("c1/eth0"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	plan := e.Tick()
	if got := portIDs(plan.Recycle); !slices.Equal(got, []string{"x2"}) {
		t.Fatalf("recycle %v", got)
	}
	e.Recycled("x2")
	if g, err := e.Acquire(keyA, sg2, "c2/eth0"); err != nil || g.Port.ID != "x2" || g.RewriteSGs {
		t.Fatalf("Acquire sg2 after recycle: %+v %v", g, err)
	}
	if _, err := e.Acquire(keyA, sg1, ""); err == nil {
		t.Fatal("Acquire with empty owner: no error")
	}
}

func TestEmptyErrorAndWaiters(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Batch: 4})
	e.AddFree(mkPort("b1", keyB, sg1))
	cool(t, e, "c1") // a cooling port is never handed out
	_, err := e.Acquire(keyA, sg1, "w1/eth0")
	var empty *EmptyError
	if !errors.As(err, &empty) || !errors.Is(err, ErrEmpty) {
		t.Fatalf("Acquire with only a cooling port: %v, want *EmptyError matching ErrEmpty", err)
	}
	if empty.Key != keyA || empty.InFlight != 0 || empty.Wait == nil || !strings.Contains(err.Error(), "net-a") {
		t.Fatalf("EmptyError %+v %q", empty, err)
	}
	_, err = e.Acquire(keyA, sg2, "w2/eth0")
	var empty2 *EmptyError
	if !errors.As(err, &empty2) || empty2.Wait != empty.Wait {
		t.Fatal("second waiter of the key got another channel")
	}
	if st := e.Stats(keyA); st.Waiting != 2 {
		t.Fatalf("waiting %d, want 2", st.Waiting)
	}
	refills := e.PlanRefills()
	if len(refills) != 1 || refills[0].Count != 4 || refills[0].SGs != sg2 {
		t.Fatalf("refills for waiters %+v, want one of 4 with the last requested SGs", refills)
	}
	if _, err := e.Acquire(keyA, sg1, "w3/eth0"); !errors.As(err, &empty) || empty.InFlight != 4 {
		t.Fatalf("EmptyError after planning: %v", err)
	}
	e.CancelWait(keyA, "w3/eth0")
	e.CancelWait(keyB, "nobody")
	e.CancelWait(Key{Node: "unknown"}, "w1/eth0")
	if st := e.Stats(keyA); st.Waiting != 2 {
		t.Fatalf("waiting %d after CancelWait, want 2", st.Waiting)
	}
	e.AddFree(mkPort("b2", keyB, sg1))
	if _, err := e.Release("w1/eth0"); !errors.Is(err, ErrUnknownOwner) {
		t.Fatalf("Release of a waiter: %v", err)
	}
	if isClosed(empty.Wait) {
		t.Fatal("wait closed by events on another key or a release")
	}
	e.RefillDone(refills[0].ID, []Port{mkPort("a1", keyA, sg2)}, nil)
	if !isClosed(empty.Wait) {
		t.Fatal("wait not closed by a completed refill")
	}
	if id := acquireID(t, e, keyA, sg2, "w2/eth0"); id != "a1" {
		t.Fatalf("waiter got %s", id)
	}
	if st := e.Stats(keyA); st.Waiting != 1 || st.InFlight != 0 {
		t.Fatalf("after one waiter acquired: %+v, want 1 waiting, nothing in flight", st)
	}
	// A waiter that turns out to hold a port (restored from the checkpoint) waits no more.
	if err := e.AddInUse(mkPort("r1", keyA, sg1), "w1/eth0"); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(keyA); st.Waiting != 0 {
		t.Fatalf("waiting %d after the waiter got a port through AddInUse, want 0", st.Waiting)
	}
}

func TestWaitClosedBy(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, e *Engine) // before the waiter
		event func(t *testing.T, e *Engine)
		want  bool
	}{
		{"AddFree on the key", nil, func(t *testing.T, e *Engine) { e.AddFree(mkPort("n", keyA, sg2)) }, true},
		{"AddFree on another key", nil, func(t *testing.T, e *Engine) { e.AddFree(mkPort("n", keyB, sg1)) }, false},
		{"AddFree of a known port", func(t *testing.T, e *Engine) { cool(t, e, "c1") }, func(t *testing.T, e *Engine) { e.AddFree(mkPort("c1", keyA, sg1)) }, false},
		{"failed refill", nil, func(t *testing.T, e *Engine) {
			r := e.PlanRefills()
			e.RefillDone(r[0].ID, nil, errors.New("quota exceeded"))
		}, true},
		{"refill of another key", func(t *testing.T, e *Engine) { e.EnsurePool(keyB, sg1) }, func(t *testing.T, e *Engine) {
			for _, r := range e.PlanRefills() {
				if r.Key == keyB {
					e.RefillDone(r.ID, nil, errors.New("quota exceeded"))
				}
			}
		}, false},
		{"Recycled", func(t *testing.T, e *Engine) { cool(t, e, "c1"); e.Tick() }, func(t *testing.T, e *Engine) { e.Recycled("c1") }, true},
		{"Abort", func(t *testing.T, e *Engine) {
			if err := e.AddInUse(mkPort("u1", keyA, sg1), "u/eth0"); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, e *Engine) {
			if err := e.Abort("u1"); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"Release", func(t *testing.T, e *Engine) {
			if err := e.AddInUse(mkPort("u1", keyA, sg1), "u/eth0"); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, e *Engine) {
			if _, err := e.Release("u/eth0"); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"Restore", nil, func(t *testing.T, e *Engine) {
			if err := e.Restore(e.Snapshot()); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, Limits{Min: 1, Batch: 1})
			if tc.setup != nil {
				tc.setup(t, e)
			}
			_, err := e.Acquire(keyA, sg1, "w/eth0")
			var empty *EmptyError
			if !errors.As(err, &empty) {
				t.Fatalf("Acquire: %v, want EmptyError", err)
			}
			tc.event(t, e)
			if got := isClosed(empty.Wait); got != tc.want {
				t.Fatalf("wait closed: %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReleaseAbortSetSGs(t *testing.T) {
	e, clk := newTestEngine(t, Limits{Batch: 1, Cooldown: time.Minute})
	addFree(t, e, sg1, "p1", "p2")
	id := acquireID(t, e, keyA, sg1, "c1/eth0")
	p, err := e.Release("c1/eth0")
	if err != nil || p.ID != id {
		t.Fatalf("Release: %s %v", p.ID, err)
	}
	if _, err := e.Release("c1/eth0"); !errors.Is(err, ErrUnknownOwner) {
		t.Fatalf("second Release: %v, want ErrUnknownOwner", err)
	}
	s := e.Snapshot()
	i := slices.IndexFunc(s.Ports, func(ps PortSnapshot) bool { return ps.Port.ID == id })
	if s.Ports[i].State != StateCooling || !s.Ports[i].Since.Equal(clk.Now()) {
		t.Fatalf("released port %+v, want cooling since %s", s.Ports[i], clk.Now())
	}
	if _, ok := e.Owner("c1/eth0"); ok {
		t.Fatal("owner still holds the port after Release")
	}
	if err := e.SetSGs(id, sg2); err != nil {
		t.Fatalf("SetSGs on a cooling port: %v", err)
	}
	if p, st, ok := e.Get(id); !ok || st != StateCooling || p.SGs != sg2 {
		t.Fatalf("Get: %+v %s %v", p, st, ok)
	}

	// Abort: free again at once, at the top of its group.
	id2 := acquireID(t, e, keyA, sg1, "c2/eth0")
	if err := e.Abort(id2); err != nil {
		t.Fatal(err)
	}
	if got := acquireID(t, e, keyA, sg1, "c3/eth0"); got != id2 {
		t.Fatalf("after Abort got %s, want the aborted %s", got, id2)
	}

	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"Abort unknown", e.Abort("nope"), ErrUnknownPort},
		{"Abort cooling", e.Abort(id), ErrState},
		{"SetSGs unknown", e.SetSGs("nope", sg1), ErrUnknownPort},
		{"SetSGs free", func() error { addFree(t, e, sg1, "p9"); return e.SetSGs("p9", sg2) }(), ErrState},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if _, _, ok := e.Get("nope"); ok {
		t.Fatal("Get of an unknown port")
	}
}

func TestAddFreeAndAddInUse(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Batch: 1})
	p := mkPort("p1", keyA, sg1)
	if got := e.AddFree(p, mkPort("p2", keyA, sg1), p, Port{}); !slices.Equal(got, []bool{true, true, false, false}) {
		t.Fatalf("AddFree reported %v", got)
	}
	p.FixedIPs[0].IP = "changed" // the engine keeps its own copy
	if got, _, _ := e.Get("p1"); got.FixedIPs[0].IP != "10.1.0.5" {
		t.Fatalf("engine shares the caller's FixedIPs: %v", got.FixedIPs)
	}
	tests := []struct {
		name  string
		port  Port
		owner string
		want  error // nil: accepted
		fail  bool
	}{
		{"new", mkPort("u1", keyA, sg1), "c1/eth0", nil, false},
		{"same again", mkPort("u1", keyA, sg1), "c1/eth0", nil, false},
		{"same port other owner", mkPort("u1", keyA, sg1), "c2/eth0", ErrConflict, true},
		{"owner holds another port", mkPort("u2", keyA, sg1), "c1/eth0", ErrConflict, true},
		{"known free port", mkPort("p1", keyA, sg1), "c3/eth0", ErrConflict, true},
		{"no ID", Port{}, "c4/eth0", nil, true},
		{"no owner", mkPort("u3", keyA, sg1), "", nil, true},
	}
	for _, tc := range tests {
		err := e.AddInUse(tc.port, tc.owner)
		if (err != nil) != tc.fail || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want failure %v (%v)", tc.name, err, tc.fail, tc.want)
		}
	}
	if st := e.Stats(keyA); st.InUse != 1 || st.Free != 2 {
		t.Fatalf("stats %+v", st)
	}
	if p, ok := e.Owner("c1/eth0"); !ok || p.ID != "u1" {
		t.Fatalf("Owner(c1/eth0) = %s %v", p.ID, ok)
	}
}

func TestTick(t *testing.T) {
	tests := []struct {
		name        string
		limits      Limits
		setup       func(t *testing.T, e *Engine, clk *engClock)
		advance     time.Duration
		wantRecycle []string
		wantDelete  []string
		wantStates  map[string]State
	}{
		{
			name:       "cooling before the cooldown stays cooling",
			limits:     Limits{Cooldown: 30 * time.Second},
			setup:      func(t *testing.T, e *Engine, _ *engClock) { cool(t, e, "c1") },
			advance:    29 * time.Second,
			wantStates: map[string]State{"c1": StateCooling},
		},
		{
			name:        "cooled at exactly the cooldown is recycled",
			limits:      Limits{Cooldown: 30 * time.Second},
			setup:       func(t *testing.T, e *Engine, _ *engClock) { cool(t, e, "c1") },
			advance:     30 * time.Second,
			wantRecycle: []string{"c1"},
			wantStates:  map[string]State{"c1": StateRecycling},
		},
		{
			name:        "zero cooldown recycles on the next tick",
			setup:       func(t *testing.T, e *Engine, _ *engClock) { cool(t, e, "c1") },
			wantRecycle: []string{"c1"},
		},
		{
			name:   "cooled ports go in release order; deleted once free+recycling reach max",
			limits: Limits{Max: 2, Cooldown: time.Second},
			setup: func(t *testing.T, e *Engine, clk *engClock) {
				addFree(t, e, sg1, "f1")
				cool(t, e, "c2")
				clk.Advance(time.Millisecond)
				cool(t, e, "c1")
			},
			advance:     time.Second,
			wantRecycle: []string{"c2"},
			wantDelete:  []string{"c1"},
			wantStates:  map[string]State{"f1": StateFree, "c2": StateRecycling, "c1": StateDeleting},
		},
		{
			name:   "pool full: a cooled port is deleted, not recycled",
			limits: Limits{Max: 2, Cooldown: time.Second},
			setup: func(t *testing.T, e *Engine, _ *engClock) {
				addFree(t, e, sg1, "f1", "f2")
				cool(t, e, "c1")
			},
			advance:    time.Second,
			wantDelete: []string{"c1"},
		},
		{
			name: "free above max: least recently used deleted first",
			setup: func(t *testing.T, e *Engine, _ *engClock) {
				addFree(t, e, sg1, "f1")
				addFree(t, e, sg2, "f2")
				addFree(t, e, sg1, "f3", "f4")
				e.SetLimits(Limits{Max: 2})
			},
			wantDelete: []string{"f1", "f2"},
			wantStates: map[string]State{"f3": StateFree, "f4": StateFree},
		},
		{
			name:   "idle ports removed down to min, least recently used first",
			limits: Limits{Min: 2, IdleTimeout: time.Minute},
			setup: func(t *testing.T, e *Engine, clk *engClock) {
				addFree(t, e, sg1, "f1", "f2", "f3")
				clk.Advance(30 * time.Second)
				addFree(t, e, sg1, "f4")
			},
			advance:    31 * time.Second, // f1-f3 idle 61 s, f4 31 s
			wantDelete: []string{"f1", "f2"},
			wantStates: map[string]State{"f3": StateFree, "f4": StateFree},
		},
		{
			name:   "idle: recently used ports stay even above min",
			limits: Limits{Min: 0, IdleTimeout: time.Minute},
			setup: func(t *testing.T, e *Engine, clk *engClock) {
				addFree(t, e, sg1, "f1")
				clk.Advance(time.Minute)
				addFree(t, e, sg1, "f2")
			},
			advance:    time.Second,
			wantDelete: []string{"f1"},
			wantStates: map[string]State{"f2": StateFree},
		},
		{
			name:       "idle exactly at the timeout is not idle longer than it",
			limits:     Limits{IdleTimeout: time.Minute},
			setup:      func(t *testing.T, e *Engine, _ *engClock) { addFree(t, e, sg1, "f1") },
			advance:    time.Minute,
			wantStates: map[string]State{"f1": StateFree},
		},
		{
			name:       "idle removal off by default",
			setup:      func(t *testing.T, e *Engine, _ *engClock) { addFree(t, e, sg1, "f1") },
			advance:    365 * 24 * time.Hour,
			wantStates: map[string]State{"f1": StateFree},
		},
		{
			name:   "in-use ports are never touched",
			limits: Limits{Max: 1, IdleTimeout: time.Second},
			setup: func(t *testing.T, e *Engine, _ *engClock) {
				for _, id := range []string{"u1", "u2"} {
					if err := e.AddInUse(mkPort(id, keyA, sg1), id+"/eth0"); err != nil {
						t.Fatal(err)
					}
				}
			},
			advance:    time.Hour,
			wantStates: map[string]State{"u1": StateInUse, "u2": StateInUse},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, clk := newTestEngine(t, tc.limits)
			tc.setup(t, e, clk)
			clk.Advance(tc.advance)
			plan := e.Tick()
			if got := portIDs(plan.Recycle); !slices.Equal(got, append([]string{}, tc.wantRecycle...)) {
				t.Errorf("recycle %v, want %v", got, tc.wantRecycle)
			}
			if got := portIDs(plan.Delete); !slices.Equal(got, append([]string{}, tc.wantDelete...)) {
				t.Errorf("delete %v, want %v", got, tc.wantDelete)
			}
			for id, want := range tc.wantStates {
				if got := stateOf(e, id); got != want {
					t.Errorf("port %s is %s, want %s", id, got, want)
				}
			}
			if err := checkEngine(e); err != nil {
				t.Fatal(err)
			}
			// Everything planned is busy: a second tick plans none of it again.
			if again := e.Tick(); len(again.Recycle)+len(again.Delete) != 0 {
				t.Errorf("second tick planned %v %v again", portIDs(again.Recycle), portIDs(again.Delete))
			}
		})
	}
}

func TestTickIdleRemovalKeepsMinAcrossTicks(t *testing.T) {
	e, clk := newTestEngine(t, Limits{Min: 1, IdleTimeout: time.Minute})
	addFree(t, e, sg1, "f1", "f2", "f3")
	clk.Advance(2 * time.Minute)
	for range 3 {
		e.Tick()
	}
	if st := e.Stats(keyA); st.Free != 1 || st.Deleting != 2 {
		t.Fatalf("stats %+v, want 1 free (min) and 2 deleting", st)
	}
	if got := portIDs(e.FreePorts(keyA)); !slices.Equal(got, []string{"f3"}) {
		t.Fatalf("free %v, want the most recently added", got)
	}
}

func TestEngineDriverReports(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Batch: 1})
	addFree(t, e, sg2, "f1")
	addFree(t, e, sg1, "f2")
	cool(t, e, "c1")
	plan := e.Tick()
	if got := portIDs(plan.Recycle); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("recycle %v", got)
	}
	e.RecycleFailed("c1")
	if got := portIDs(e.Tick().Recycle); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("after RecycleFailed the tick recycles %v, want c1 again", got)
	}
	e.Deleted("c1") // not deleting: ignored
	e.DeleteFailed("c1")
	if stateOf(e, "c1") != StateRecycling {
		t.Fatalf("c1 is %s after reports for another state", stateOf(e, "c1"))
	}
	e.Recycled("c1")
	e.Recycled("c1") // a second report is ignored
	if got := portIDs(e.FreePorts(keyA)); !slices.Equal(got, []string{"c1", "f2", "f1"}) {
		t.Fatalf("free ports %v, want the recycled one first", got)
	}
	if got := acquireID(t, e, keyA, sg1, "a/eth0"); got != "c1" {
		t.Fatalf("acquired %s, want the recycled port", got)
	}

	deleted := e.Free(keyA)
	if got := portIDs(deleted); !slices.Equal(got, []string{"f2", "f1"}) {
		t.Fatalf("Free returned %v", got)
	}
	if len(e.Tick().Delete) != 0 {
		t.Fatal("tick planned ports the Free caller is deleting")
	}
	e.DeleteFailed("f1")
	e.RecycleFailed("f2") // not recycling: ignored
	if got := portIDs(e.Tick().Delete); !slices.Equal(got, []string{"f1"}) {
		t.Fatalf("after DeleteFailed the tick deletes %v, want f1 again", got)
	}
	e.Deleted("f1")
	e.Deleted("f2")
	e.Deleted("f2")
	for _, id := range []string{"f1", "f2"} {
		if stateOf(e, id) != "gone" {
			t.Fatalf("%s still known after Deleted", id)
		}
	}
	if st := e.Stats(keyA); st != (Stats{InUse: 1}) {
		t.Fatalf("stats %+v, want only the in-use port", st)
	}
	if e.Free(Key{Node: "unknown"}) != nil || e.FreePorts(Key{Node: "unknown"}) != nil {
		t.Fatal("Free/FreePorts of an unknown key returned ports")
	}
}

func TestPlanRefills(t *testing.T) {
	type want struct {
		counts []int
		sgs    SGSet
	}
	tests := []struct {
		name   string
		limits Limits
		setup  func(t *testing.T, e *Engine)
		want   want
	}{
		{"unknown keys plan nothing", Limits{Min: 5, Batch: 10}, func(*testing.T, *Engine) {}, want{}},
		{"known key, min 0, nobody waiting", Limits{Batch: 10}, func(t *testing.T, e *Engine) { e.EnsurePool(keyA, sg1) }, want{}},
		{"min with the default batch: one batch", Limits{Min: 5, Batch: 10}, func(t *testing.T, e *Engine) { e.EnsurePool(keyA, sg1) }, want{[]int{10}, sg1}},
		{"need above batch: split in batches", Limits{Min: 25, Batch: 10}, func(t *testing.T, e *Engine) { e.EnsurePool(keyA, sg1) }, want{[]int{10, 10, 5}, sg1}},
		{"never past max", Limits{Min: 5, Max: 8, Batch: 10}, func(t *testing.T, e *Engine) { e.EnsurePool(keyA, sg1) }, want{[]int{8}, sg1}},
		{"max counts what is available", Limits{Min: 5, Max: 8, Batch: 10}, func(t *testing.T, e *Engine) { addFree(t, e, sg1, "f1", "f2", "f3") }, want{[]int{5}, ""}},
		{"at min: nothing", Limits{Min: 2, Batch: 10}, func(t *testing.T, e *Engine) { addFree(t, e, sg1, "f1", "f2") }, want{}},
		{"min above max: up to max", Limits{Min: 9, Max: 3, Batch: 2}, func(t *testing.T, e *Engine) { e.EnsurePool(keyA, sg2) }, want{[]int{2, 1}, sg2}},
		{
			// The AWS VPC CNI bug: cooling addresses counted as available, so a pool whose free
			// ports were all cooling looked full and was never refilled.
			"cooling ports are not available", Limits{Min: 2, Batch: 1},
			func(t *testing.T, e *Engine) { cool(t, e, "c1"); cool(t, e, "c2"); cool(t, e, "c3") },
			want{[]int{1, 1}, ""},
		},
		{
			"recycling ports are available", Limits{Min: 2, Batch: 1},
			func(t *testing.T, e *Engine) { cool(t, e, "c1"); cool(t, e, "c2"); e.Tick() },
			want{},
		},
		{
			"deleting ports are not available", Limits{Min: 1, Batch: 1},
			func(t *testing.T, e *Engine) { addFree(t, e, sg1, "f1"); e.Free(keyA) },
			want{[]int{1}, ""},
		},
		{
			"waiters raise the target above min", Limits{Min: 0, Batch: 2},
			func(t *testing.T, e *Engine) {
				e.EnsurePool(keyA, sg1)
				for i := range 3 {
					_, _ = e.Acquire(keyA, sg2, fmt.Sprintf("w%d/eth0", i))
				}
			},
			want{[]int{2, 1}, sg2},
		},
		{
			"a request overrides EnsurePool's SGs", Limits{Min: 1, Batch: 1},
			func(t *testing.T, e *Engine) {
				addFree(t, e, sg1, "f1")
				e.EnsurePool(keyA, sg2)
				acquireID(t, e, keyA, sg12, "a/eth0")
			},
			want{[]int{1}, sg12},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, tc.limits)
			tc.setup(t, e)
			got := e.PlanRefills()
			var counts []int
			inFlight := 0
			for _, r := range got {
				counts = append(counts, r.Count)
				inFlight += r.Count
				if r.Key != keyA || r.SGs != tc.want.sgs || r.Forced || r.Count > tc.limits.Batch {
					t.Errorf("refill %+v, want key %s SGs %q unforced at most %d", r, keyA, tc.want.sgs, tc.limits.Batch)
				}
			}
			if !slices.Equal(counts, tc.want.counts) {
				t.Fatalf("refill counts %v, want %v", counts, tc.want.counts)
			}
			if st := e.Stats(keyA); st.InFlight != inFlight {
				t.Fatalf("in flight %d, want %d", st.InFlight, inFlight)
			}
			if again := e.PlanRefills(); len(again) != 0 {
				t.Fatalf("second PlanRefills planned %+v: in-flight ports not counted", again)
			}
		})
	}
}

func TestRefillDone(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Min: 3, Batch: 2})
	e.EnsurePool(keyA, sg1)
	r := e.PlanRefills()
	if len(r) != 2 || r[0].ID == r[1].ID {
		t.Fatalf("refills %+v", r)
	}
	created := mkPort("n1", Key{}, sg1) // a port without key gets the ticket's
	e.RefillDone(r[0].ID, []Port{created, mkPort("n2", keyA, sg1)}, nil)
	if st := e.Stats(keyA); st.Free != 2 || st.InFlight != 1 {
		t.Fatalf("after the first ticket %+v, want 2 free, 1 in flight", st)
	}
	e.RefillDone(r[0].ID, nil, nil) // reported twice: in flight must not drop again
	e.RefillDone(r[1].ID, nil, errors.New("quota exceeded"))
	if st := e.Stats(keyA); st.InFlight != 0 || st.Free != 2 {
		t.Fatalf("after the failed ticket %+v", st)
	}
	// The failed ticket is planned again.
	if r2 := e.PlanRefills(); len(r2) != 1 || r2[0].Count != 2 || r2[0].ID <= r[1].ID {
		t.Fatalf("replanned %+v", r2)
	}
	// A ticket the engine forgot (planned before a Restore) still brings its ports in.
	e.RefillDone(9999, []Port{mkPort("late", keyB, sg1)}, nil)
	if _, st, ok := e.Get("late"); !ok || st != StateFree {
		t.Fatalf("port of an unknown ticket: %s %v", st, ok)
	}
}

func TestPopulate(t *testing.T) {
	tests := []struct {
		name       string
		limits     Limits
		setup      func(t *testing.T, e *Engine)
		n          int
		force      bool
		wantCounts []int
		wantCapped int
	}{
		{"split in batches", Limits{Batch: 10}, nil, 25, false, []int{10, 10, 5}, 0},
		{"exactly n even above min", Limits{Min: 2, Batch: 10}, nil, 3, false, []int{3}, 0},
		{"capped at max", Limits{Max: 8, Batch: 10}, func(t *testing.T, e *Engine) { addFree(t, e, sg1, "f1", "f2", "f3") }, 10, false, []int{5}, 5},
		{"forced past max", Limits{Max: 8, Batch: 10}, func(t *testing.T, e *Engine) { addFree(t, e, sg1, "f1", "f2", "f3") }, 10, true, []int{10}, 0},
		{"in flight counts toward max", Limits{Max: 8, Batch: 10}, func(t *testing.T, e *Engine) { e.Populate(keyA, sg1, 8, false) }, 3, false, nil, 3},
		{"nothing asked", Limits{Batch: 10}, nil, 0, false, nil, 0},
		{"negative asks nothing", Limits{Batch: 10}, nil, -4, true, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, tc.limits)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			before := e.Stats(keyA).InFlight
			tickets, capped := e.Populate(keyA, sg2, tc.n, tc.force)
			var counts []int
			for _, r := range tickets {
				counts = append(counts, r.Count)
				if !r.Forced || r.SGs != sg2 || r.Key != keyA {
					t.Errorf("ticket %+v, want forced, SGs %q, key %s", r, sg2, keyA)
				}
			}
			if !slices.Equal(counts, tc.wantCounts) || capped != tc.wantCapped {
				t.Fatalf("counts %v capped %d, want %v capped %d", counts, capped, tc.wantCounts, tc.wantCapped)
			}
			sum := 0
			for _, c := range counts {
				sum += c
			}
			if got := e.Stats(keyA).InFlight - before; got != sum {
				t.Fatalf("in flight grew by %d, want %d", got, sum)
			}
		})
	}
}

func TestPopulateRefillSGs(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Min: 1, Batch: 1})
	e.EnsurePool(keyA, sg1)
	e.Populate(keyA, sg2, 0, false) // a known key keeps its refill SGs
	e.Populate(keyB, sg2, 0, false) // a new key gets the populate's SGs
	got := map[Key]SGSet{}
	for _, r := range e.PlanRefills() {
		got[r.Key] = r.SGs
	}
	if want := map[Key]SGSet{keyA: sg1, keyB: sg2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("refill SGs %v, want %v", got, want)
	}
}

// buildState makes an engine with a port in every state, pending rewrites and group order.
func buildState(t *testing.T) (*Engine, *engClock) {
	t.Helper()
	e, clk := newTestEngine(t, Limits{Min: 1, Batch: 2, Cooldown: time.Minute})
	addFree(t, e, sg1, "f1", "f2")
	addFree(t, e, sg2, "g1")
	acquireID(t, e, keyA, sg1, "a/eth0")                       // f2
	if g, err := e.Acquire(keyA, sg12, "b/eth0"); err != nil { // f1 from sg1, the older group
		t.Fatal(err)
	} else if !g.RewriteSGs {
		t.Fatal("no rewrite")
	}
	addFree(t, e, sg1, "f3")
	cool(t, e, "c1")
	clk.Advance(time.Minute)
	cool(t, e, "c2")
	cool(t, e, "c3")
	clk.Advance(time.Minute)
	e.Tick() // c1, c2, c3 cooled: recycling and busy
	cool(t, e, "c4")
	e.AddFree(mkPort("k1", keyB, sg1))
	e.Free(keyB)
	e.EnsurePool(Key{Node: "n2", Project: "p", Network: "x"}, sg2)
	return e, clk
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	e, clk := buildState(t)
	s1 := e.Snapshot()
	b1, err := json.Marshal(s1)
	if err != nil {
		t.Fatal(err)
	}
	var decoded Snapshot
	if err := json.Unmarshal(b1, &decoded); err != nil {
		t.Fatal(err)
	}
	r := NewEngine(Limits{Min: 1, Batch: 2, Cooldown: time.Minute}, clk)
	if err := r.Restore(decoded); err != nil {
		t.Fatal(err)
	}
	if err := checkEngine(r); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(r.Snapshot())
	if string(b1) != string(b2) {
		t.Fatalf("round trip changed the state:\n%s\n%s", b1, b2)
	}
	if !slices.Equal(r.Keys(), e.Keys()) {
		t.Fatalf("keys %v, want %v", r.Keys(), e.Keys())
	}
	for _, k := range e.Keys() {
		want, got := e.Stats(k), r.Stats(k)
		want.InFlight = 0
		if got != want {
			t.Fatalf("stats of %s: %+v, want %+v without in flight", k, got, want)
		}
	}
	// Behaviour is the same: the pending rewrite, group order, LIFO, busy marks cleared.
	if g, err := r.Acquire(keyA, sg12, "b/eth0"); err != nil || !g.RewriteSGs {
		t.Fatalf("pending rewrite lost: %+v %v", g, err)
	}
	for _, eng := range []*Engine{e, r} {
		if got := acquireID(t, eng, keyA, NewSGSet("sg-x"), "x/eth0"); got != "g1" {
			t.Fatalf("least recently updated group gave %s, want g1", got)
		}
	}
	plan := r.Tick()
	if got := portIDs(plan.Delete); !slices.Equal(got, []string{"k1"}) {
		t.Fatalf("restored deleting ports planned %v, want k1 again", got)
	}
	if got := portIDs(plan.Recycle); len(got) != 3 {
		t.Fatalf("restored recycling ports planned %v, want all 3 again", got)
	}
	if stateOf(r, "c4") != StateCooling {
		t.Fatalf("c4, released just now, is %s after the tick, want cooling", stateOf(r, "c4"))
	}
}

func TestRestoreKeepsCooldown(t *testing.T) {
	e, clk := newTestEngine(t, Limits{Cooldown: time.Minute})
	cool(t, e, "c1")
	s := e.Snapshot()
	clk.Advance(59 * time.Second)
	r := NewEngine(Limits{Cooldown: time.Minute}, clk)
	if err := r.Restore(s); err != nil {
		t.Fatal(err)
	}
	if plan := r.Tick(); len(plan.Recycle) != 0 {
		t.Fatal("restore reset or lost the release time: recycled before the cooldown")
	}
	clk.Advance(time.Second)
	if plan := r.Tick(); len(plan.Recycle) != 1 {
		t.Fatal("not recycled after the cooldown")
	}
}

func TestRestoreInvalid(t *testing.T) {
	ps := func(id string, st State, owner string) PortSnapshot {
		return PortSnapshot{Port: mkPort(id, keyA, sg1), State: st, Owner: owner}
	}
	tests := []struct {
		name string
		s    Snapshot
		want string
	}{
		{"duplicate port", Snapshot{Ports: []PortSnapshot{ps("p1", StateFree, ""), ps("p1", StateCooling, "")}}, "port p1 listed twice"},
		{"in use without owner", Snapshot{Ports: []PortSnapshot{ps("p2", StateInUse, "")}}, "port p2: in use without owner"},
		{"owner twice", Snapshot{Ports: []PortSnapshot{ps("p3", StateInUse, "c/eth0"), ps("p4", StateInUse, "c/eth0")}}, "port p4: owner \"c/eth0\" also holds port p3"},
		{"owner on a free port", Snapshot{Ports: []PortSnapshot{ps("p5", StateFree, "c/eth0")}}, "port p5: free but owned"},
		{"unknown state", Snapshot{Ports: []PortSnapshot{ps("p6", "lost", "")}}, "port p6: unknown state"},
		{"no ID", Snapshot{Ports: []PortSnapshot{{State: StateFree}}}, "port #0 has no ID"},
		{"pool twice", Snapshot{Pools: []PoolSnapshot{{Key: keyA}, {Key: keyA}}}, "pool " + keyA.String() + " listed twice"},
		{"group twice", Snapshot{Pools: []PoolSnapshot{{Key: keyA, Groups: []GroupSnapshot{{SGs: sg1}, {SGs: sg1}}}}}, "group \"sg-1\" listed twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, Limits{Batch: 1})
			addFree(t, e, sg1, "keep")
			before, _ := json.Marshal(e.Snapshot())
			err := e.Restore(tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Restore: %v, want an error containing %q", err, tc.want)
			}
			if after, _ := json.Marshal(e.Snapshot()); string(after) != string(before) {
				t.Fatal("a failed Restore changed the state")
			}
		})
	}
}

func TestRestoreDropsInFlightAndWaiters(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Min: 2, Batch: 2})
	_, err := e.Acquire(keyA, sg1, "w/eth0")
	var empty *EmptyError
	if !errors.As(err, &empty) {
		t.Fatal(err)
	}
	old := e.PlanRefills()
	if err := e.Restore(e.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(keyA); st.InFlight != 0 || st.Waiting != 0 {
		t.Fatalf("after Restore %+v, want nothing in flight or waiting", st)
	}
	if !isClosed(empty.Wait) {
		t.Fatal("waiters not woken by Restore")
	}
	r := e.PlanRefills()
	if len(r) != 1 || r[0].ID <= old[0].ID {
		t.Fatalf("refills after Restore %+v: ticket IDs must not be reused (old %+v)", r, old)
	}
	e.RefillDone(old[0].ID, []Port{mkPort("n1", keyA, sg1)}, nil) // stale ticket: ports kept, in flight untouched
	if st := e.Stats(keyA); st.InFlight != 2 || st.Free != 1 {
		t.Fatalf("after a stale RefillDone %+v", st)
	}
}

func TestKeysStatsLimits(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Min: -1, Max: -2, Batch: 0, Cooldown: -time.Second, IdleTimeout: -time.Second})
	if got := e.Limits(); got != (Limits{Batch: 1}) {
		t.Fatalf("normalised limits %+v", got)
	}
	keys := []Key{
		{Node: "b", Project: "p", Network: "n"},
		{Node: "a", Project: "q", Network: "n"},
		{Node: "a", Project: "p", Network: "z"},
		{Node: "a", Project: "p", Network: "m"},
	}
	for _, k := range keys {
		e.EnsurePool(k, "")
	}
	e.EnsurePool(keys[0], sg1) // known already: no duplicate
	want := []Key{keys[3], keys[2], keys[1], keys[0]}
	if got := e.Keys(); !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
	if st := e.Stats(Key{Node: "none"}); st != (Stats{}) {
		t.Fatalf("stats of an unknown key %+v", st)
	}
}

// TestEngineConcurrentUse runs owners, the update loop and a driver at once; with -race it proves the
// locking, and the invariants must hold at the end.
func TestEngineConcurrentUse(t *testing.T) {
	e, clk := newTestEngine(t, Limits{Min: 4, Max: 16, Batch: 4})
	e.EnsurePool(keyA, sg1)
	stop := make(chan struct{})
	var driver sync.WaitGroup
	driver.Go(func() {
		n := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			clk.Advance(time.Second)
			plan := e.Tick()
			for _, r := range plan.Refills {
				var ports []Port
				for range r.Count {
					n++
					ports = append(ports, mkPort(fmt.Sprintf("n%d", n), r.Key, r.SGs))
				}
				e.RefillDone(r.ID, ports, nil)
			}
			for _, p := range plan.Recycle {
				e.Recycled(p.ID)
			}
			for _, p := range plan.Delete {
				e.Deleted(p.ID)
			}
		}
	})
	var owners sync.WaitGroup
	for w := range 4 {
		owners.Go(func() {
			for i := range 300 {
				owner := fmt.Sprintf("c%d-%d/eth0", w, i%3)
				sgs := []SGSet{sg1, sg2}[i%2]
				if _, err := e.Acquire(keyA, sgs, owner); err != nil {
					e.CancelWait(keyA, owner)
					continue
				}
				if _, err := e.Release(owner); err != nil {
					t.Errorf("release %s: %v", owner, err)
				}
			}
		})
	}
	owners.Wait()
	close(stop)
	driver.Wait()
}

func TestPoolTypes(t *testing.T) {
	if got := keyA.String(); got != `["10.0.0.6","proj","net-a"]` {
		t.Errorf("Key.String() = %s", got)
	}
	for _, tc := range []struct {
		ids  []string
		want SGSet
		list []string
	}{
		{nil, "", []string{}},
		{[]string{"b", " a ", "", "b"}, "a,b", []string{"a", "b"}},
		{[]string{"sg"}, "sg", []string{"sg"}},
	} {
		got := NewSGSet(tc.ids...)
		if got != tc.want || !slices.Equal(got.IDs(), tc.list) {
			t.Errorf("NewSGSet(%q) = %q %q, want %q %q", tc.ids, got, got.IDs(), tc.want, tc.list)
		}
	}
	if (RealClock{}).Now().IsZero() {
		t.Error("RealClock returned the zero time")
	}
}
