package pool

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBackend is an in-memory Neutron for one node that records every call. It is all or nothing
// like the real backends, and can fail, be slow (gate) or create fewer ports than asked.
type fakeBackend struct {
	node string

	mu     sync.Mutex
	ports  map[string]ListedPort // what Neutron has
	nextID int
	calls  []string // every call, in order: "create", "delete", "reset", "sgs", "mark", "list"

	creates   []CreateRequest
	deletes   [][]string
	resets    []string
	sgUpdates []string // "<port> <sgs>"
	marks     []string // "<port> <name> <deviceID>"

	createErr   error
	createShort int           // > 0: create at most this many ports per call
	createExtra int           // create this many more ports than asked (a misbehaving backend)
	createGate  chan struct{} // non-nil: CreatePorts waits for a receive (or ctx) after recording the call
	deleteErr   map[string]error
	deleteGate  chan struct{} // non-nil: DeletePorts waits for a receive (or ctx) before deleting
	resetErr    error
	sgErr       error
	markErrs    int           // the first markErrs MarkInUse calls fail
	markGate    chan struct{} // non-nil: MarkInUse waits for a receive (or ctx) before it lands
	listErr     error
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{node: drvKey.Node, ports: map[string]ListedPort{}}
}

func (f *fakeBackend) Node() string { return f.node }

func (f *fakeBackend) record(call string) {
	f.calls = append(f.calls, call)
}

// seed puts a port in Neutron behind the driver's back (pre-created, or left by an earlier run).
func (f *fakeBackend) seed(id string, k Key, sgs SGSet, attached bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ports[id] = ListedPort{Port: Port{ID: id, Key: k, SGs: sgs, MAC: "fa:16:3e:00:00:99",
		FixedIPs: []FixedIP{{SubnetID: "subnet-1", IP: "10.1.0.99"}}}, Name: AvailablePortName,
		DeviceOwner: DeviceOwnerSubport, Attached: attached}
}

func (f *fakeBackend) CreatePorts(ctx context.Context, req CreateRequest) ([]Port, error) {
	f.mu.Lock()
	f.record("create")
	f.creates = append(f.creates, req)
	gate, fail, short, extra := f.createGate, f.createErr, f.createShort, f.createExtra
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	n := req.Count + extra
	if short > 0 {
		n = min(n, short)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ports := make([]Port, n)
	for i := range ports {
		f.nextID++
		p := Port{ID: fmt.Sprintf("new-%03d", f.nextID), Key: req.Key, SGs: req.SGs,
			MAC: fmt.Sprintf("fa:16:3e:00:01:%02x", f.nextID%256), VLAN: 100 + f.nextID,
			FixedIPs: []FixedIP{{SubnetID: req.SubnetIDs[0], IP: fmt.Sprintf("10.1.1.%d", f.nextID%250)}}}
		ports[i] = p
		f.ports[p.ID] = ListedPort{Port: p, Name: AvailablePortName, DeviceOwner: DeviceOwnerSubport, Attached: true}
	}
	return ports, nil
}

func (f *fakeBackend) DeletePorts(ctx context.Context, ports []Port) map[string]error {
	if err := f.pass(ctx, func(f *fakeBackend) chan struct{} { return f.deleteGate }); err != nil {
		failed := map[string]error{}
		for _, p := range ports {
			failed[p.ID] = err
		}
		return failed
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("delete")
	ids := make([]string, len(ports))
	var failed map[string]error
	for i, p := range ports {
		ids[i] = p.ID
		if err := f.deleteErr[p.ID]; err != nil {
			if failed == nil {
				failed = map[string]error{}
			}
			failed[p.ID] = err
			continue
		}
		delete(f.ports, p.ID)
	}
	f.deletes = append(f.deletes, ids)
	return failed
}

func (f *fakeBackend) ResetPort(ctx context.Context, p Port) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("reset")
	f.resets = append(f.resets, p.ID)
	return f.resetErr
}

func (f *fakeBackend) UpdateSGs(ctx context.Context, p Port, sgs SGSet) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("sgs")
	f.sgUpdates = append(f.sgUpdates, p.ID+" "+string(sgs))
	return f.sgErr
}

func (f *fakeBackend) MarkInUse(ctx context.Context, p Port, name, deviceID string) error {
	if err := f.pass(ctx, func(f *fakeBackend) chan struct{} { return f.markGate }); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("mark")
	f.marks = append(f.marks, p.ID+" "+name+" "+deviceID)
	if f.markErrs > 0 {
		f.markErrs--
		return fmt.Errorf("port %s: 500 internal server error", p.ID)
	}
	return nil
}

func (f *fakeBackend) ListPorts(ctx context.Context) ([]ListedPort, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("list")
	if f.listErr != nil {
		return nil, f.listErr
	}
	out := slices.Collect(maps.Values(f.ports))
	slices.SortFunc(out, func(a, b ListedPort) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// view runs fn under the fake's lock, for reading what it recorded.
func (f *fakeBackend) view(fn func(f *fakeBackend)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// pass waits for a receive on the gate which(f) names, if it is set, or for ctx.
func (f *fakeBackend) pass(ctx context.Context, which func(*fakeBackend) chan struct{}) error {
	f.mu.Lock()
	gate := which(f)
	f.mu.Unlock()
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeBackend) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeBackend) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.ports[id]
	return ok
}

// drvClock is the fake clock of the driver tests.
type drvClock struct {
	mu sync.Mutex
	t  time.Time
}

var drvT0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func (c *drvClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *drvClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var (
	drvKey  = Key{Node: "10.0.0.6", Project: "proj", Network: "net-1"}
	drvKey2 = Key{Node: "10.0.0.6", Project: "proj", Network: "net-2"}
	drvSGa  = NewSGSet("sg-a")
	drvSGb  = NewSGSet("sg-b")
	drvSubs = []string{"subnet-1"}
)

// drvTest is a Driver over a fakeBackend with a fake clock.
type drvTest struct {
	t   *testing.T
	d   *Driver
	f   *fakeBackend
	clk *drvClock
	ctx context.Context

	stop func() // cancels Run and waits for it
}

// newDrvTest builds the driver; the period is an hour, so that only the test's ticks run. The
// engine's invariants are checked at the end.
func newDrvTest(t *testing.T, f *fakeBackend, opts DriverOptions) *drvTest {
	t.Helper()
	clk := &drvClock{t: drvT0}
	opts.Clock = clk
	if opts.UpdateFrequency == 0 {
		opts.UpdateFrequency = time.Hour
	}
	d := NewDriver(f, opts)
	d.markBase = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	dt := &drvTest{t: t, d: d, f: f, clk: clk, ctx: ctx, stop: cancel}
	t.Cleanup(func() {
		dt.stop()
		if err := checkEngine(d.e); err != nil {
			t.Errorf("engine invariants at the end: %v", err)
		}
	})
	return dt
}

// run starts Run; stop cancels it and waits for it to return.
func (dt *drvTest) run() {
	ctx, cancel := context.WithCancel(dt.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		dt.d.Run(ctx)
	}()
	dt.stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			dt.t.Error("Run did not return after its context was cancelled")
		}
	}
}

func (dt *drvTest) recover(inUse map[string]string, cooling map[string]time.Time) RecoverReport {
	dt.t.Helper()
	rep, err := dt.d.Recover(dt.ctx, inUse, cooling)
	if err != nil {
		dt.t.Fatalf("Recover: %v", err)
	}
	return rep
}

// tick makes Run tick now and returns once the tick is planned (its Neutron calls may still run).
func (dt *drvTest) tick() {
	dt.t.Helper()
	done := make(chan struct{})
	dt.d.tickC <- done
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		dt.t.Fatal("Run did not tick")
	}
}

func (dt *drvTest) acquire(owner string, sgs SGSet) Port {
	dt.t.Helper()
	ctx, cancel := context.WithTimeout(dt.ctx, 10*time.Second)
	defer cancel()
	p, err := dt.d.Acquire(ctx, AcquireRequest{Key: drvKey, SubnetIDs: drvSubs, SGs: sgs, Owner: owner})
	if err != nil {
		dt.t.Fatalf("Acquire(%s): %v", owner, err)
	}
	return p
}

// waitFor polls cond: the driver works in the background, and what a test waits for is an outcome,
// not a duration.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (dt *drvTest) state(id string) State {
	st, _ := dt.d.PortState(id)
	return st
}
