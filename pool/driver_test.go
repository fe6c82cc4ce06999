package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDriverFillsWithOneBulkCreate(t *testing.T) {
	f := newFakeBackend()
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Min: 5, Batch: 10}})
	dt.recover(nil, nil)
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	dt.run()

	waitFor(t, "10 free ports", func() bool { s := dt.d.Stats(drvKey); return s.Free == 10 && s.InFlight == 0 })
	f.view(func(f *fakeBackend) {
		want := []CreateRequest{{Key: drvKey, SubnetIDs: drvSubs, SGs: drvSGa, Count: 10}}
		if len(f.creates) != 1 || !equalCreate(f.creates[0], want[0]) {
			t.Errorf("creates = %+v, want one %+v", f.creates, want)
		}
	})
	if c := dt.d.Counters(); c.PortsCreated != 10 {
		t.Errorf("PortsCreated = %d, want 10", c.PortsCreated)
	}

	// A free port: no backend call at all.
	before := f.numCalls()
	p := dt.acquire("c1/eth0", drvSGa)
	if n := f.numCalls(); n != before {
		t.Errorf("Acquire with a free port made %d backend calls", n-before)
	}
	if p.SGs != drvSGa || dt.state(p.ID) != StateInUse {
		t.Errorf("acquired %+v in state %s", p, dt.state(p.ID))
	}

	// Down to 4 free (below Min 5): the take is topped up behind the requests, by one batch.
	for _, o := range []string{"c2/eth0", "c3/eth0", "c4/eth0", "c5/eth0", "c6/eth0"} {
		dt.acquire(o, drvSGa)
	}
	waitFor(t, "the top-up", func() bool { s := dt.d.Stats(drvKey); return s.Free == 14 && s.InFlight == 0 })
	f.view(func(f *fakeBackend) {
		if len(f.creates) != 2 || f.creates[1].Count != 10 {
			t.Errorf("creates after the top-up = %+v, want a second one of 10", f.creates)
		}
	})
}

func equalCreate(a, b CreateRequest) bool {
	return a.Key == b.Key && slices.Equal(a.SubnetIDs, b.SubnetIDs) && a.SGs == b.SGs && a.Count == b.Count
}

// onWaitRecorder records the reasons an Acquire waited for.
type onWaitRecorder struct {
	mu      sync.Mutex
	reasons []string
}

func (r *onWaitRecorder) OnWait(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

func (r *onWaitRecorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reasons)
}

func TestDriverAcquireWaitsForRefill(t *testing.T) {
	f := newFakeBackend()
	gate := make(chan struct{})
	f.createGate = gate
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Min: 0, Batch: 3}})
	dt.recover(nil, nil)
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	dt.run()

	var rec onWaitRecorder
	type result struct {
		p   Port
		err error
	}
	res := make(chan result, 1)
	go func() {
		p, err := dt.d.Acquire(dt.ctx, AcquireRequest{Key: drvKey, SubnetIDs: drvSubs, SGs: drvSGa, Owner: "c1/eth0", OnWait: rec.OnWait})
		res <- result{p, err}
	}()
	waitFor(t, "the refill to start", func() bool {
		var n int
		f.view(func(f *fakeBackend) { n = len(f.creates) })
		return n == 1
	})
	if got := rec.get(); !slices.Equal(got, []string{refillWaitReason}) {
		t.Errorf("OnWait reasons = %q, want [%q]", got, refillWaitReason)
	}
	if s := dt.d.Stats(drvKey); s.Waiting != 1 || s.InFlight != 3 {
		t.Errorf("stats while waiting = %+v, want 1 waiting, 3 in flight", s)
	}
	close(gate)
	r := <-res
	if r.err != nil {
		t.Fatalf("Acquire: %v", r.err)
	}
	if dt.state(r.p.ID) != StateInUse || r.p.Key != drvKey {
		t.Errorf("got port %+v in state %s", r.p, dt.state(r.p.ID))
	}
	f.view(func(f *fakeBackend) {
		if len(f.creates) != 1 || f.creates[0].Count != 3 {
			t.Errorf("creates = %+v, want one batch of 3", f.creates)
		}
	})
	waitFor(t, "2 free", func() bool { s := dt.d.Stats(drvKey); return s.Free == 2 && s.Waiting == 0 })
}

func TestDriverRefillFailureAndBackoff(t *testing.T) {
	f := newFakeBackend()
	f.createErr = errors.New("create ports: 409 Conflict: Quota exceeded for resources: ['port']")
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Min: 0, Batch: 2}, UpdateFrequency: 5 * time.Second})
	dt.recover(nil, nil)
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	dt.run()
	numCreates := func() (n int) { f.view(func(f *fakeBackend) { n = len(f.creates) }); return n }

	var rec onWaitRecorder
	ctx, cancel := context.WithCancel(dt.ctx)
	defer cancel()
	go func() { // the request's deadline: once it has seen the failure (the checks below say if not)
		for deadline := time.Now().Add(10 * time.Second); len(rec.get()) < 2 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := dt.d.Acquire(ctx, AcquireRequest{Key: drvKey, SubnetIDs: drvSubs, SGs: drvSGa, Owner: "c1/eth0", OnWait: rec.OnWait})
	var pe *PoolEmptyError
	if !errors.As(err, &pe) || !errors.Is(err, ErrPoolEmpty) {
		t.Fatalf("Acquire on a failing pool = %v, want a *PoolEmptyError", err)
	}
	if pe.Key != drvKey || !strings.Contains(pe.Reason, "Quota exceeded") {
		t.Errorf("PoolEmptyError %+v: want the key and the quota error as reason", pe)
	}
	if got := rec.get(); len(got) != 2 || got[0] != refillWaitReason || !strings.Contains(got[1], "Quota exceeded") {
		t.Errorf("OnWait reasons = %q, want %q then the quota error", got, refillWaitReason)
	}
	if s := dt.d.Stats(drvKey); s.Waiting != 0 {
		t.Errorf("still %d waiting after the timeout", s.Waiting)
	}
	// The fake clock stands still: the backoff allows no second call, however long the wait.
	if n := numCreates(); n != 1 {
		t.Errorf("%d creates before the backoff ran out, want 1", n)
	}
	ps := dt.d.Snapshot().Pools
	if len(ps) != 1 || !strings.Contains(ps[0].LastError, "Quota exceeded") || !ps[0].RetryAt.Equal(drvT0.Add(time.Second)) {
		t.Errorf("pool status %+v: want the quota error and a retry 1s later", ps)
	}

	// Once the backoff has passed, a request retries; the next failure doubles the backoff.
	dt.clk.Advance(time.Second)
	res := make(chan error, 1)
	go func() {
		_, err := dt.d.Acquire(dt.ctx, AcquireRequest{Key: drvKey, SubnetIDs: drvSubs, SGs: drvSGa, Owner: "c2/eth0"})
		res <- err
	}()
	waitFor(t, "the second failure", func() bool {
		ps := dt.d.Snapshot().Pools
		return numCreates() == 2 && ps[0].RetryAt.Equal(drvT0.Add(3*time.Second))
	})
	// Neutron recovers; after the backoff the waiting request is served.
	f.view(func(f *fakeBackend) { f.createErr = nil })
	dt.clk.Advance(2 * time.Second)
	dt.d.kick()
	if err := <-res; err != nil {
		t.Fatalf("Acquire after recovery: %v", err)
	}
	if ps := dt.d.Snapshot().Pools; ps[0].LastError != "" || !ps[0].RetryAt.IsZero() {
		t.Errorf("pool status after a success: %+v", ps[0])
	}
	if c := dt.d.Counters(); c.CreateFailures != 2 {
		t.Errorf("CreateFailures = %d, want 2", c.CreateFailures)
	}

	// The backoff never exceeds UpdateFrequency.
	for range 10 {
		dt.d.refillResult(drvKey2, errors.New("boom"))
	}
	if at := dt.d.retryAt(drvKey2); !at.Equal(dt.clk.Now().Add(5 * time.Second)) {
		t.Errorf("backoff after 10 failures ends at %v, want now + UpdateFrequency", at)
	}
}

func TestDriverRefillWithoutSubnets(t *testing.T) {
	f := newFakeBackend()
	f.seed("old-1", drvKey2, drvSGa, true)
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Min: 3, Batch: 2}})
	dt.recover(nil, nil) // drvKey2 is known from Neutron only: nobody said which subnets
	dt.run()
	waitFor(t, "the refill to fail", func() bool {
		ps := dt.d.Snapshot().Pools
		return len(ps) == 1 && strings.Contains(ps[0].LastError, "no subnets known")
	})
	if n := f.numCalls(); n != 1 { // the list only
		t.Errorf("%d backend calls, want only the list", n)
	}
	if _, _, err := dt.d.Populate(dt.ctx, drvKey2, 2, false); err == nil || !strings.Contains(err.Error(), "no subnets known") {
		t.Errorf("Populate of a pool without subnets = %v", err)
	}
}

func TestDriverDeletesOverMax(t *testing.T) {
	f := newFakeBackend()
	for _, id := range []string{"p1", "p2", "p3", "p4", "p5"} {
		f.seed(id, drvKey, drvSGa, true)
	}
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Max: 3, Batch: 1}})
	if rep := dt.recover(nil, nil); rep.Free != 5 {
		t.Fatalf("recovered %+v, want 5 free", rep)
	}
	dt.run()
	dt.tick()
	waitFor(t, "the surplus deleted", func() bool { s := dt.d.Stats(drvKey); return s.Free == 3 && s.Deleting == 0 })
	f.view(func(f *fakeBackend) {
		if len(f.deletes) != 1 || !slices.Equal(f.deletes[0], []string{"p1", "p2"}) {
			t.Errorf("deletes = %q, want one batch of the two least recently used, p1 p2", f.deletes)
		}
		if len(f.ports) != 3 {
			t.Errorf("%d ports left in Neutron, want 3", len(f.ports))
		}
	})

	// A delete that fails stays deleting and is retried by the next tick.
	dt.d.e.SetLimits(Limits{Max: 2, Batch: 1})
	f.view(func(f *fakeBackend) { f.deleteErr = map[string]error{"p3": errors.New("503")} })
	dt.tick()
	waitFor(t, "the failed delete reported", func() bool { return dt.d.Counters().DeleteFailures == 1 })
	if st := dt.state("p3"); st != StateDeleting {
		t.Fatalf("p3 is %s after a failed delete, want deleting", st)
	}
	f.view(func(f *fakeBackend) { f.deleteErr = nil })
	dt.tick()
	waitFor(t, "p3 deleted", func() bool { _, ok := dt.d.PortState("p3"); return !ok && !f.has("p3") })
}

func TestDriverRecyclesCooledPorts(t *testing.T) {
	f := newFakeBackend()
	f.seed("p1", drvKey, drvSGa, true)
	f.seed("p2", drvKey, drvSGa, true)
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1, Cooldown: 10 * time.Second}})
	dt.recover(nil, nil)
	dt.run()

	p := dt.acquire("c1/eth0", drvSGa)
	if _, err := dt.d.Release("c1/eth0"); err != nil {
		t.Fatal(err)
	}
	if st := dt.state(p.ID); st != StateCooling {
		t.Fatalf("released port is %s, want cooling", st)
	}
	dt.tick()
	if st := dt.state(p.ID); st != StateCooling {
		t.Fatalf("port is %s after a tick within the cooldown, want cooling", st)
	}
	dt.clk.Advance(10 * time.Second)
	dt.tick()
	waitFor(t, "the recycle", func() bool { return dt.state(p.ID) == StateFree })
	f.view(func(f *fakeBackend) {
		if !slices.Equal(f.resets, []string{p.ID}) {
			t.Errorf("resets = %q, want [%s]", f.resets, p.ID)
		}
	})
	if q := dt.acquire("c2/eth0", drvSGa); q.ID != p.ID {
		t.Errorf("acquired %s after the recycle, want the recycled %s (most recently returned)", q.ID, p.ID)
	}

	// A reset that fails leaves the port recycling; the next tick tries again.
	f.view(func(f *fakeBackend) { f.resetErr = errors.New("500") })
	if _, err := dt.d.Release("c2/eth0"); err != nil {
		t.Fatal(err)
	}
	dt.clk.Advance(10 * time.Second)
	dt.tick()
	waitFor(t, "the failed reset reported", func() bool { return dt.d.Counters().RecycleFailures == 1 })
	if st := dt.state(p.ID); st != StateRecycling {
		t.Errorf("port is %s after a failed reset, want recycling", st)
	}
	f.view(func(f *fakeBackend) { f.resetErr = nil })
	dt.tick()
	waitFor(t, "the second recycle", func() bool { return dt.state(p.ID) == StateFree })
}

func TestDriverSGRewrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sgErr   error
		wantErr bool
	}{
		{name: "rewritten", sgErr: nil},
		{name: "update fails: port back to free", sgErr: errors.New("412 Precondition Failed"), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBackend()
			f.seed("p1", drvKey, drvSGa, true)
			f.sgErr = tc.sgErr
			dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1}})
			dt.recover(nil, nil)
			p, err := dt.d.Acquire(dt.ctx, AcquireRequest{Key: drvKey, SubnetIDs: drvSubs, SGs: drvSGb, Owner: "c1/eth0"})
			f.view(func(f *fakeBackend) {
				if !slices.Equal(f.sgUpdates, []string{"p1 " + string(drvSGb)}) {
					t.Errorf("UpdateSGs calls = %q, want p1 to %s", f.sgUpdates, drvSGb)
				}
			})
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "412") {
					t.Fatalf("Acquire = %v, want the update's error", err)
				}
				if st := dt.state("p1"); st != StateFree {
					t.Errorf("p1 is %s after the failed rewrite, want free", st)
				}
				if fp := dt.d.FreePorts(drvKey); len(fp) != 1 || fp[0].SGs != drvSGa {
					t.Errorf("free ports %+v, want p1 with its old SGs", fp)
				}
				if c := dt.d.Counters(); c.SGRewriteFailures != 1 {
					t.Errorf("counters %+v", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.ID != "p1" || p.SGs != drvSGb {
				t.Errorf("got %+v, want p1 with %s", p, drvSGb)
			}
			snap := dt.d.e.Snapshot()
			if snap.Ports[0].Port.SGs != drvSGb {
				t.Errorf("engine has SGs %q for p1, want %q", snap.Ports[0].Port.SGs, drvSGb)
			}
		})
	}
}

func TestDriverNotReady(t *testing.T) {
	f := newFakeBackend()
	f.listErr = errors.New("503 Service Unavailable")
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1}})
	if _, err := dt.d.Acquire(dt.ctx, AcquireRequest{Key: drvKey, SubnetIDs: drvSubs, Owner: "c1/eth0"}); !errors.Is(err, ErrNotReady) {
		t.Errorf("Acquire before Recover = %v, want ErrNotReady", err)
	}
	if _, _, err := dt.d.Populate(dt.ctx, drvKey, 1, false); !errors.Is(err, ErrNotReady) {
		t.Errorf("Populate before Recover = %v, want ErrNotReady", err)
	}
	if _, err := dt.d.Free(dt.ctx, drvKey); !errors.Is(err, ErrNotReady) {
		t.Errorf("Free before Recover = %v, want ErrNotReady", err)
	}
	if _, err := dt.d.Recover(dt.ctx, nil, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Recover with a failing list = %v", err)
	}
	if dt.d.Ready() {
		t.Error("ready after a failed Recover")
	}
	f.view(func(f *fakeBackend) { f.listErr = nil })
	dt.recover(nil, nil)
	if !dt.d.Ready() {
		t.Error("not ready after Recover")
	}
}

func TestDriverPopulateAndFree(t *testing.T) {
	f := newFakeBackend()
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Max: 20, Batch: 10}})
	dt.recover(nil, nil)
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	counts := func() (c []int) {
		f.view(func(f *fakeBackend) {
			for _, r := range f.creates {
				c = append(c, r.Count)
			}
		})
		slices.Sort(c)
		return c
	}

	created, capped, err := dt.d.Populate(dt.ctx, drvKey, 25, false)
	if err != nil || created != 20 || capped != 5 {
		t.Fatalf("Populate 25 under Max 20 = %d created, %d capped, %v", created, capped, err)
	}
	if got := counts(); !slices.Equal(got, []int{10, 10}) {
		t.Errorf("create counts %v, want two batches of 10", got)
	}
	dt.acquire("c1/eth0", drvSGa)
	if _, err := dt.d.Release("c1/eth0"); err != nil { // one cooling
		t.Fatal(err)
	}
	dt.acquire("c2/eth0", drvSGa) // one in use

	deleted, err := dt.d.Free(dt.ctx, drvKey)
	if err != nil || deleted != 18 {
		t.Fatalf("Free = %d, %v; want 18 deleted", deleted, err)
	}
	if s := dt.d.Stats(drvKey); s != (Stats{InUse: 1, Cooling: 1}) {
		t.Errorf("stats after Free: %+v, want only the in-use and the cooling port", s)
	}
	f.view(func(f *fakeBackend) {
		if len(f.ports) != 2 || len(f.deletes) != 1 || len(f.deletes[0]) != 18 {
			t.Errorf("Neutron has %d ports, deletes %d, want 2 left after one batch of 18", len(f.ports), len(f.deletes))
		}
	})

	// Forced, past Max, in batches; a short batch counts what was made.
	f.view(func(f *fakeBackend) { f.creates, f.createShort = nil, 4 })
	created, capped, err = dt.d.Populate(dt.ctx, drvKey, 25, true)
	if err != nil || created != 12 || capped != 0 {
		t.Errorf("forced Populate of 25 with a backend making 4 per call = %d, %d, %v; want 12, 0", created, capped, err)
	}
	if got := counts(); !slices.Equal(got, []int{5, 10, 10}) {
		t.Errorf("create counts %v, want 5 10 10", got)
	}
	if s := dt.d.Stats(drvKey); s.Free != 12 || s.InFlight != 0 {
		t.Errorf("stats %+v after the forced populate", s)
	}

	// Free with one delete failing: the rest go, the failed one is retried by a tick.
	f.view(func(f *fakeBackend) { f.deleteErr = map[string]error{"new-021": errors.New("409 port is a subport")} })
	deleted, err = dt.d.Free(dt.ctx, drvKey)
	if deleted != 11 || err == nil || !strings.Contains(err.Error(), "new-021") {
		t.Errorf("Free with a failing delete = %d, %v; want 11 and an error naming new-021", deleted, err)
	}
	if st := dt.state("new-021"); st != StateDeleting {
		t.Errorf("new-021 is %s, want deleting", st)
	}
	f.view(func(f *fakeBackend) { f.deleteErr = nil })
	dt.run()
	dt.tick()
	waitFor(t, "new-021 deleted by the tick", func() bool { return !f.has("new-021") && dt.state("new-021") == "" })
}

func TestDriverPopulateCancelled(t *testing.T) {
	f := newFakeBackend()
	f.createGate = make(chan struct{}) // Neutron never answers
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 5}, MaxConcurrentRefills: 1})
	dt.recover(nil, nil)
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	ctx, cancel := context.WithCancel(dt.ctx)
	type result struct {
		created int
		err     error
	}
	res := make(chan result, 1)
	go func() {
		c, _, err := dt.d.Populate(ctx, drvKey, 15, false)
		res <- result{c, err}
	}()
	waitFor(t, "a creation in flight", func() bool { return f.numCalls() == 2 && dt.d.Stats(drvKey).InFlight == 15 })
	cancel()
	r := <-res
	if r.created != 0 || !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled Populate = %d, %v; want 0 and context.Canceled", r.created, r.err)
	}
	if s := dt.d.Stats(drvKey); s != (Stats{}) {
		t.Errorf("stats after the cancelled Populate: %+v, want nothing in flight", s)
	}
	f.view(func(f *fakeBackend) {
		if len(f.creates) != 1 || len(f.ports) != 0 { // one slot: the other tickets never started
			t.Errorf("%d creates and %d ports after the cancel, want 1 and 0", len(f.creates), len(f.ports))
		}
	})
}

func TestDriverRunExitsOnCancel(t *testing.T) {
	f := newFakeBackend()
	f.createGate = make(chan struct{})
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Min: 5, Batch: 5}, MaxConcurrentRefills: 1})
	dt.recover(nil, nil)
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	dt.d.EnsurePool(drvKey2, drvSubs, drvSGa)
	dt.run()
	waitFor(t, "one creation in flight, one waiting for a slot", func() bool {
		return f.numCalls() == 2 && dt.d.Stats(drvKey).InFlight+dt.d.Stats(drvKey2).InFlight == 10
	})
	// A second Run returns at once instead of doubling the work.
	second := make(chan struct{})
	go func() { dt.d.Run(dt.ctx); close(second) }()
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("a second Run did not return")
	}
	dt.stop() // fails the test if Run does not return
	for _, k := range []Key{drvKey, drvKey2} {
		if s := dt.d.Stats(k); s.InFlight != 0 {
			t.Errorf("pool %s: %d still in flight after Run returned", k, s.InFlight)
		}
	}
	if f.numCalls() != 2 {
		t.Errorf("%d backend calls, want the list and one create", f.numCalls())
	}
}

func TestDriverMarkInUse(t *testing.T) {
	f := newFakeBackend()
	f.seed("p1", drvKey, drvSGa, true)
	f.seed("p2", drvKey, drvSGa, true)
	f.markErrs = 2
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1}})
	dt.recover(nil, nil)
	dt.run()

	p := dt.acquire("c1/eth0", drvSGa)
	dt.d.MarkInUse(p, "ns/pod1", "uid-1")
	want := p.ID + " ns/pod1 uid-1"
	waitFor(t, "the mark after two failures", func() bool {
		var m []string
		f.view(func(f *fakeBackend) { m = slices.Clone(f.marks) })
		return slices.Equal(m, []string{want, want, want})
	})

	// Run directly: a released port is not marked; a mark failing every time gives up.
	q := dt.acquire("c2/eth0", drvSGa)
	if _, err := dt.d.Release("c2/eth0"); err != nil {
		t.Fatal(err)
	}
	before := f.numCalls()
	dt.d.mark(dt.ctx, markJob{p: q, name: "ns/pod2", deviceID: "uid-2", owner: "c2/eth0"})
	if n := f.numCalls(); n != before {
		t.Errorf("a released port was marked (%d calls)", n-before)
	}
	r := dt.acquire("c3/eth0", drvSGa)
	before = f.numCalls()
	f.view(func(f *fakeBackend) { f.markErrs = 100 })
	dt.d.mark(dt.ctx, markJob{p: r, name: "ns/pod3", deviceID: "uid-3", owner: "c3/eth0"})
	if n := f.numCalls() - before; n != markAttempts {
		t.Errorf("%d mark calls before giving up, want %d", n, markAttempts)
	}
	if c := dt.d.Counters(); c.MarkFailures != 1 {
		t.Errorf("MarkFailures = %d, want 1", c.MarkFailures)
	}
}

func TestDriverMarkInUseNeverBlocks(t *testing.T) {
	f := newFakeBackend()
	f.seed("p1", drvKey, drvSGa, true)
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1}})
	dt.recover(nil, nil)
	p := dt.acquire("c1/eth0", drvSGa)
	// No Run: nothing drains the queue.
	for range markQueueLen + 3 {
		dt.d.MarkInUse(p, "ns/pod", "uid")
	}
	if c := dt.d.Counters(); c.MarksDropped != 3 {
		t.Errorf("MarksDropped = %d, want 3", c.MarksDropped)
	}
	dt.d.MarkInUse(Port{ID: "nobody's"}, "ns/pod", "uid") // not in use: not even queued
	if c := dt.d.Counters(); c.MarksDropped != 3 {
		t.Errorf("MarksDropped = %d after marking a port not in use, want still 3", c.MarksDropped)
	}
}

// TestDriverRecycleWaitsForMark: a pod's port is released while the request naming it after the
// pod is still in flight; the recycle resets the port only once that request is done, so the port
// goes back to the pool as available-port, not with the old pod's name.
func TestDriverRecycleWaitsForMark(t *testing.T) {
	f := newFakeBackend()
	f.seed("p1", drvKey, drvSGa, true)
	gate := make(chan struct{})
	f.markGate = gate
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1, Cooldown: time.Second}})
	dt.recover(nil, nil)
	dt.run()
	p := dt.acquire("c1/eth0", drvSGa)
	dt.d.MarkInUse(p, "ns/pod1", "uid-1")
	waitFor(t, "the mark in flight", func() bool {
		dt.d.mu.Lock()
		defer dt.d.mu.Unlock()
		return dt.d.marking[p.ID] != nil
	})
	if _, err := dt.d.Release("c1/eth0"); err != nil {
		t.Fatal(err)
	}
	dt.clk.Advance(time.Second)
	dt.tick()
	time.Sleep(50 * time.Millisecond)
	if st := dt.state(p.ID); st != StateRecycling {
		t.Fatalf("port is %s with its mark in flight, want recycling (waiting)", st)
	}
	f.view(func(f *fakeBackend) {
		if len(f.resets) != 0 {
			t.Errorf("reset %q while the mark was in flight", f.resets)
		}
	})
	close(gate)
	waitFor(t, "the recycle after the mark", func() bool { return dt.state(p.ID) == StateFree })
	f.view(func(f *fakeBackend) {
		var order []string
		for _, c := range f.calls {
			if c == "mark" || c == "reset" {
				order = append(order, c)
			}
		}
		if !slices.Equal(order, []string{"mark", "reset"}) {
			t.Errorf("Neutron calls %q, want the mark, then the reset", order)
		}
	})
}

// TestDriverLateMarkRetrySkipsTheNextPod: a mark that failed retries later; by then its pod is gone
// and the recycled port belongs to another pod, whose port the retry must not rename.
func TestDriverLateMarkRetrySkipsTheNextPod(t *testing.T) {
	f := newFakeBackend()
	f.seed("p1", drvKey, drvSGa, true)
	f.markErrs = 1
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1}})
	dt.d.markBase = 300 * time.Millisecond
	dt.recover(nil, nil)
	dt.run()
	p := dt.acquire("c1/eth0", drvSGa)
	dt.d.MarkInUse(p, "ns/pod1", "uid-1")
	waitFor(t, "the first, failed, mark", func() bool {
		n := 0
		f.view(func(f *fakeBackend) { n = len(f.marks) })
		return n == 1
	})
	if _, err := dt.d.Release("c1/eth0"); err != nil {
		t.Fatal(err)
	}
	dt.tick() // no cooldown: recycled at once
	waitFor(t, "the recycle", func() bool { return dt.state(p.ID) == StateFree })
	if q := dt.acquire("c2/eth0", drvSGa); q.ID != p.ID {
		t.Fatalf("acquired %s, want the recycled %s", q.ID, p.ID)
	}
	time.Sleep(3 * dt.d.markBase) // past the retry
	f.view(func(f *fakeBackend) {
		if len(f.marks) != 1 {
			t.Errorf("marks %q: the retry of pod1's mark ran on pod2's port", f.marks)
		}
	})
}

func TestDriverNoop(t *testing.T) {
	f := newFakeBackend()
	f.seed("leftover", drvKey, drvSGa, true) // no pod holds it: a noop node keeps no pool
	f.seed("used", drvKey, drvSGa, true)     // a pod's
	f.seed("released", drvKey, drvSGa, true) // released before the restart
	dt := newDrvTest(t, f, DriverOptions{Noop: true, Limits: Limits{Min: 5, Batch: 10}})
	rep := dt.recover(map[string]string{"used": "c0/eth0"}, map[string]time.Time{"released": drvT0})
	if rep.InUse != 1 || rep.Deleting != 2 || rep.Free != 0 {
		t.Errorf("noop Recover report %+v, want 1 in use, 2 deleting", rep)
	}
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	dt.run()
	waitFor(t, "the leftovers deleted", func() bool { return !f.has("leftover") && !f.has("released") })

	p := dt.acquire("c1/eth0", drvSGa)
	f.view(func(f *fakeBackend) {
		want := CreateRequest{Key: drvKey, SubnetIDs: drvSubs, SGs: drvSGa, Count: 1}
		if len(f.creates) != 1 || !equalCreate(f.creates[0], want) {
			t.Errorf("creates = %+v, want exactly one %+v (no pool refill)", f.creates, want)
		}
	})
	if q := dt.acquire("c1/eth0", drvSGa); q.ID != p.ID {
		t.Errorf("a repeated Acquire got %s, want the same %s", q.ID, p.ID)
	}
	if _, err := dt.d.Release("c1/eth0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the port deleted on release", func() bool { return !f.has(p.ID) && dt.state(p.ID) == "" })

	// A failed plug: Abort deletes the port too.
	q := dt.acquire("c2/eth0", drvSGa)
	if err := dt.d.Abort(q.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the aborted port deleted", func() bool { return !f.has(q.ID) && dt.state(q.ID) == "" })

	if _, err := dt.d.Release("nobody/eth0"); !errors.Is(err, ErrUnknownOwner) {
		t.Errorf("Release of an unknown owner = %v, want ErrUnknownOwner", err)
	}
	if _, _, err := dt.d.Populate(dt.ctx, drvKey, 3, true); err == nil {
		t.Error("noop Populate succeeded")
	}
	f.view(func(f *fakeBackend) {
		if len(f.creates) != 2 {
			t.Errorf("%d creates, want one per pod (2)", len(f.creates))
		}
		if len(f.ports) != 1 || f.ports["used"].ID == "" {
			t.Errorf("Neutron ports %v, want only the pod's own", f.ports)
		}
	})
	if s := dt.d.Stats(drvKey); s != (Stats{InUse: 1}) {
		t.Errorf("noop stats %+v", s)
	}

	// A backend making more than the one port asked: the extra is deleted, not leaked.
	f.view(func(f *fakeBackend) { f.createExtra = 1 })
	r := dt.acquire("c4/eth0", drvSGa)
	f.view(func(f *fakeBackend) { f.createExtra = 0 })
	if dt.state(r.ID) != StateInUse || !f.has(r.ID) {
		t.Errorf("port %s is %q", r.ID, dt.state(r.ID))
	}
	f.view(func(f *fakeBackend) {
		if last := f.deletes[len(f.deletes)-1]; len(last) != 1 || last[0] == r.ID || f.ports[last[0]].ID != "" {
			t.Errorf("the extra port was not deleted: deletes %q", f.deletes)
		}
	})
	// An owner holding a port of another pool: refused before any creation.
	calls := f.numCalls()
	if _, err := dt.d.Acquire(dt.ctx, AcquireRequest{Key: drvKey2, SubnetIDs: drvSubs, Owner: "c4/eth0"}); !errors.Is(err, ErrConflict) {
		t.Errorf("Acquire of another pool by the same owner = %v, want ErrConflict", err)
	}
	if f.numCalls() != calls {
		t.Error("the refused Acquire called the backend")
	}
	if _, err := dt.d.Release("c4/eth0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "c4's port deleted", func() bool { return !f.has(r.ID) })

	// Creation failure: a plain error, nothing registered.
	f.view(func(f *fakeBackend) { f.createErr = errors.New("quota exceeded") })
	if _, err := dt.d.Acquire(dt.ctx, AcquireRequest{Key: drvKey, SubnetIDs: drvSubs, SGs: drvSGa, Owner: "c3/eth0"}); err == nil || !strings.Contains(err.Error(), "quota") {
		t.Errorf("noop Acquire with a failing create = %v", err)
	}
}

// TestDriverConcurrent runs requests, releases, ticks and refills at once (for -race), and checks
// that no port is ever held by two owners.
func TestDriverConcurrent(t *testing.T) {
	f := newFakeBackend()
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Min: 3, Max: 12, Batch: 4}, UpdateFrequency: time.Millisecond})
	dt.recover(nil, nil)
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	dt.run()

	var mu sync.Mutex
	holder := map[string]string{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			sgs := []SGSet{drvSGa, drvSGb}[w%2]
			for i := range 40 {
				owner := string(rune('a'+w)) + "/" + string(rune('0'+i%10))
				ctx, cancel := context.WithTimeout(dt.ctx, 10*time.Second)
				p, err := dt.d.Acquire(ctx, AcquireRequest{Key: drvKey, SubnetIDs: drvSubs, SGs: sgs, Owner: owner})
				cancel()
				if err != nil {
					t.Errorf("Acquire(%s): %v", owner, err)
					return
				}
				mu.Lock()
				if h, taken := holder[p.ID]; taken {
					t.Errorf("port %s handed to %s while %s holds it", p.ID, owner, h)
				}
				holder[p.ID] = owner
				mu.Unlock()
				dt.d.MarkInUse(p, "ns/"+owner, "uid")
				dt.clk.Advance(time.Second)
				mu.Lock()
				delete(holder, p.ID)
				mu.Unlock()
				if i%7 == 0 {
					err = dt.d.Abort(p.ID)
				} else {
					_, err = dt.d.Release(owner)
				}
				if err != nil {
					t.Errorf("give back %s: %v", p.ID, err)
				}
			}
		})
	}
	wg.Wait()
	dt.stop()
	if err := checkEngine(dt.d.e); err != nil {
		t.Fatal(err)
	}
	// The engine and Neutron agree: nothing leaked, nothing lost.
	known := map[string]bool{}
	for _, ps := range dt.d.e.Snapshot().Ports {
		known[ps.Port.ID] = true
		if !f.has(ps.Port.ID) {
			t.Errorf("engine knows port %s (%s) that Neutron does not have", ps.Port.ID, ps.State)
		}
	}
	f.view(func(f *fakeBackend) {
		for id := range f.ports {
			if !known[id] {
				t.Errorf("port %s leaked: in Neutron, unknown to the engine", id)
			}
		}
	})
}

// A namespace subnet's pool: pre-populated once while empty, never on top of ports it holds, and
// retired when the namespace goes.
func TestDriverPopulateEmptyAndRetire(t *testing.T) {
	f := newFakeBackend()
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Min: 2, Max: 20, Batch: 10, Cooldown: time.Second}})
	if _, err := dt.d.PopulateEmpty(dt.ctx, drvKey, drvSubs, drvSGa, 5); !errors.Is(err, ErrNotReady) {
		t.Errorf("PopulateEmpty before Recover: %v, want ErrNotReady", err)
	}
	dt.recover(nil, nil)
	if _, err := dt.d.PopulateEmpty(dt.ctx, drvKey, nil, drvSGa, 5); err == nil || !strings.Contains(err.Error(), "no subnet") {
		t.Errorf("PopulateEmpty without a subnet: %v", err)
	}
	created, err := dt.d.PopulateEmpty(dt.ctx, drvKey, drvSubs, drvSGa, 5)
	if err != nil || created != 5 {
		t.Fatalf("PopulateEmpty of an empty pool = %d, %v; want 5", created, err)
	}
	f.view(func(f *fakeBackend) {
		if len(f.creates) != 1 || f.creates[0].Count != 5 || !slices.Equal(f.creates[0].SubnetIDs, drvSubs) {
			t.Errorf("creates %+v, want one of 5 ports on %v", f.creates, drvSubs)
		}
	})
	// Taken, released: the pool holds ports in every state but free; a second populate (a restart,
	// a resync) must not add to it.
	for i := range 5 {
		dt.acquire(fmt.Sprintf("c%d/eth0", i), drvSGa)
	}
	if _, err := dt.d.Release("c0/eth0"); err != nil {
		t.Fatal(err)
	}
	if created, err := dt.d.PopulateEmpty(dt.ctx, drvKey, drvSubs, drvSGa, 5); err != nil || created != 0 {
		t.Errorf("PopulateEmpty of a pool in use = %d, %v; want 0", created, err)
	}

	dt.run()
	dt.tick() // below Min: refilled, so the pool has free ports again
	waitFor(t, "the refill to Min", func() bool { return dt.d.Stats(drvKey).Free >= 2 })
	deleted, err := dt.d.Retire(dt.ctx, drvKey)
	if st := dt.d.Stats(drvKey); err != nil || deleted == 0 || st.Free != 0 || st.InUse != 4 || st.Cooling != 1 {
		t.Fatalf("Retire = %d, %v; stats %+v; want the free ports deleted, 4 in use and 1 cooling kept", deleted, err, st)
	}
	creates := func() (n int) {
		f.view(func(f *fakeBackend) { n = len(f.creates) })
		return n
	}
	before := creates()
	// Released ports of a retired pool are deleted, never recycled, and nothing is refilled; once
	// empty the key is forgotten.
	for i := 1; i < 5; i++ {
		if _, err := dt.d.Release(fmt.Sprintf("c%d/eth0", i)); err != nil {
			t.Fatal(err)
		}
	}
	dt.tick()
	waitFor(t, "the retired pool's ports deleted", func() bool {
		n := 0
		f.view(func(f *fakeBackend) { n = len(f.ports) })
		return n == 0
	})
	dt.tick()
	waitFor(t, "the retired key forgotten", func() bool { return !slices.Contains(dt.d.Keys(), drvKey) })
	if got := creates(); got != before {
		t.Errorf("%d creates after Retire, want none", got-before)
	}
	if n := dt.d.Counters().PortsRecycled; n != 0 {
		t.Errorf("%d ports recycled, want every released port of the retired pool deleted", n)
	}
}

// OnRefillError hears of every failed refill, with the key and the backend's error.
func TestDriverOnRefillError(t *testing.T) {
	f := newFakeBackend()
	var mu sync.Mutex
	var heard []error
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Min: 1, Batch: 2}, OnRefillError: func(k Key, err error) {
		mu.Lock()
		defer mu.Unlock()
		if k == drvKey {
			heard = append(heard, err)
		}
	}})
	dt.recover(nil, nil)
	quota := errors.New("409 OverQuota")
	f.view(func(f *fakeBackend) { f.createErr = quota })
	if _, err := dt.d.PopulateEmpty(dt.ctx, drvKey, drvSubs, drvSGa, 2); !errors.Is(err, quota) {
		t.Fatalf("PopulateEmpty: %v, want the backend's error", err)
	}
	if _, _, err := dt.d.Populate(dt.ctx, drvKey, 2, false); !errors.Is(err, quota) {
		t.Fatalf("Populate: %v, want the backend's error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 2 || !errors.Is(heard[0], quota) {
		t.Errorf("OnRefillError heard %v, want the quota error twice", heard)
	}
}

// A port deleted outside the agent while it cools is forgotten when its recycle finds it gone,
// instead of failing on every tick.
func TestDriverRecycleOfAGonePort(t *testing.T) {
	f := newFakeBackend()
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1}})
	dt.recover(nil, nil)
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	if _, _, err := dt.d.Populate(dt.ctx, drvKey, 1, false); err != nil {
		t.Fatal(err)
	}
	p := dt.acquire("c1/eth0", drvSGa)
	if _, err := dt.d.Release("c1/eth0"); err != nil {
		t.Fatal(err)
	}
	f.view(func(f *fakeBackend) { f.resetErr = fmt.Errorf("reset port %s: %w: 404", p.ID, ErrPortGone) })
	dt.run()
	dt.tick()
	waitFor(t, "the gone port forgotten", func() bool { return dt.state(p.ID) == "" })
	if s := dt.d.Stats(drvKey); s != (Stats{}) || dt.d.Counters().RecycleFailures != 0 {
		t.Errorf("stats %+v, recycle failures %d; want nothing left and no failure counted", s, dt.d.Counters().RecycleFailures)
	}
}

// TestDriverShutdownFinishesDeletions: ports handed over for deletion (a noop DEL) when the agent
// stops are deleted within the shutdown grace, not left in Neutron; past the grace Run gives up and
// returns, and the port is left to the next start.
func TestDriverShutdownFinishesDeletions(t *testing.T) {
	for _, tt := range []struct {
		name        string
		grace       time.Duration
		openGate    bool // the deletion can finish
		wantDeleted bool
	}{
		{name: "deletion finishes within the grace", grace: 10 * time.Second, openGate: true, wantDeleted: true},
		{name: "deletion outlasts the grace", grace: 50 * time.Millisecond, openGate: false, wantDeleted: false},
		{name: "no grace", grace: -1, openGate: true, wantDeleted: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeBackend()
			dt := newDrvTest(t, f, DriverOptions{Noop: true, Limits: Limits{Batch: 1}, ShutdownGrace: tt.grace})
			dt.recover(nil, nil)
			dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
			dt.run()
			p := dt.acquire("c1/eth0", drvSGa)
			gate := make(chan struct{})
			f.view(func(f *fakeBackend) { f.deleteGate = gate })
			if _, err := dt.d.Release("c1/eth0"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the deletion to start", func() bool { return dt.state(p.ID) == StateDeleting })
			stopped := make(chan struct{})
			go func() {
				dt.stop()
				close(stopped)
			}()
			select {
			case <-stopped:
				if tt.grace > time.Second {
					t.Fatal("Run returned with a deletion in flight and grace left")
				}
			case <-time.After(200 * time.Millisecond):
				if tt.openGate {
					close(gate)
				}
				<-stopped
			}
			if deleted := !f.has(p.ID); deleted != tt.wantDeleted {
				t.Errorf("port deleted from Neutron: %v, want %v", deleted, tt.wantDeleted)
			}
		})
	}
}
