package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// Defaults of DriverOptions.
const (
	// DefaultUpdateFrequency is kuryr's ports_pool_update_frequency default.
	DefaultUpdateFrequency = 20 * time.Second
	// DefaultMaxConcurrentRefills bounds the bulk creations in flight (kuryr allows 20, which
	// Neutron and its rate limits rarely reward).
	DefaultMaxConcurrentRefills = 4
)

// ErrNotReady is returned by Acquire, Populate and Free before Recover has loaded the pools
// (kuryr's ResourceNotReady): before that, a free port might be one the checkpoint says is in use.
var ErrNotReady = errors.New("pools not loaded yet")

// ErrNoPools is the answer of pool operations under the noop pool driver, which keeps none.
var ErrNoPools = errors.New("the noop pool driver keeps no pools")

// ErrPortGone is what a Backend returns for a port that no longer exists in Neutron (deleted
// behind the agent's back): the pools forget it instead of retrying it forever.
var ErrPortGone = errors.New("port no longer exists")

// refillWaitReason is PoolEmptyError.Reason and the OnWait reason while no refill of the key failed.
const refillWaitReason = "refill in flight"

// Tunables that tests shorten.
const (
	retryBase    = time.Second // first backoff after a failed refill; doubles up to UpdateFrequency
	markAttempts = 4
	markBackoff  = time.Second // doubles per MarkInUse attempt
	markQueueLen = 1024
	deleteQueue  = 256
	markWorkers  = 2
	minTimerWait = 10 * time.Millisecond
)

// DriverOptions configure a Driver.
type DriverOptions struct {
	Limits Limits
	// UpdateFrequency is [vif_pool] ports_pool_update_frequency, the Tick period; 0 is the default.
	UpdateFrequency time.Duration
	// Noop is vif_pool_driver noop: no pool. Acquire creates one port synchronously; Release (and
	// Abort) hand it to Run, which deletes it at once, not on the next tick.
	Noop bool
	// Clock is the engine's and the backoff's time; nil is RealClock. Run's period and the
	// MarkInUse retries use real timers.
	Clock Clock
	// MaxConcurrentRefills bounds the bulk creations in flight; 0 is the default. Resets and
	// deletions share a second bound of the same size.
	MaxConcurrentRefills int
	// OnRefillError, when set, hears of every failed refill or populate of a key (quota, VLAN
	// IDs, Neutron down...), for Events and alerts. It must not block.
	OnRefillError func(key Key, err error)
	// ShutdownGrace is how long Run, once its context is done, goes on deleting the ports already
	// handed to it (the noop driver's released ports, a pool's surplus) before it gives up on them;
	// 0 is the default (10 s), negative is none. Without it a noop agent stopped after a burst of
	// DELs left every port still queued in Neutron until its next start.
	ShutdownGrace time.Duration
}

const defaultShutdownGrace = 10 * time.Second

// DriverCounters are cumulative counts of what a Driver did, for metrics. The per-pool gauges are
// Stats.
type DriverCounters struct {
	PortsCreated      int64 // by refills, Populate and noop Acquire
	CreateFailures    int64 // failed CreatePorts calls
	PortsRecycled     int64
	RecycleFailures   int64
	PortsDeleted      int64
	DeleteFailures    int64 // ports DeletePorts could not delete
	SGRewrites        int64 // free ports handed out with their security groups rewritten
	SGRewriteFailures int64
	MarkFailures      int64 // MarkInUse given up after its retries
	MarksDropped      int64 // MarkInUse not even tried: queue full
}

// PoolStatus is one pool as the Driver sees it.
type PoolStatus struct {
	Key   Key
	Stats Stats
	// LastError is the last refill failure of the key, "" after a success.
	LastError string
	// RetryAt is when a refill of the key may be tried again after failures (zero: now).
	RetryAt time.Time
}

// DriverSnapshot is everything a Driver reports about itself, for health and metrics.
type DriverSnapshot struct {
	Node     string
	Ready    bool
	Pools    []PoolStatus
	Counters DriverCounters
}

// Driver carries out the engine's plans for the pools of one node through a Backend: it refills,
// recycles and deletes ports in the background (Run), and serves the CNI and management paths.
// All methods are safe for concurrent use.
type Driver struct {
	b     Backend
	e     *Engine
	clock Clock
	node  string
	noop  bool
	// shutdownGrace: how long a stopping Run finishes its deletions.
	shutdownGrace time.Duration

	onRefillError func(Key, error)
	freq          time.Duration
	base          time.Duration // retryBase, shorter in tests

	createSem chan struct{} // bulk creations in flight
	ioSem     chan struct{} // resets and delete batches in flight

	kickC   chan struct{}      // plan refills now (buffered 1: kicks coalesce)
	tickC   chan chan struct{} // tick now; the channel, if any, is closed once the tick is planned
	deleteC chan Port          // noop: ports to delete now
	markC   chan markJob

	ready   atomic.Bool
	running atomic.Bool

	mu    sync.Mutex
	pools map[Key]*driverPool
	// marking holds the ports whose MarkInUse request is in flight, each with a channel closed when
	// it ends: a recycle waits for it, so that a late mark never renames a port already reset.
	marking map[string]chan struct{}

	n struct {
		created, createFail, recycled, recycleFail, deleted, deleteFail,
		sgRewrites, sgRewriteFail, markFail, markDrop atomic.Int64
	}
	markBase time.Duration // markBackoff, shorter in tests
	mut      mutationGuard // creations and deletions, for Resync
}

// driverPool is what the driver knows of a key beyond the engine: how to create its ports and how
// its refills fare.
type driverPool struct {
	subnets  []string
	sgs      SGSet // EnsurePool's or the last requested: Populate creates ports with it
	sgsKnown bool
	lastErr  string
	failures int
	retryAt  time.Time
}

type markJob struct {
	p              Port
	name, deviceID string
	owner          string // the engine owner the port was in use by when the job was queued
}

// NewDriver returns a Driver for the pools of b's node. It serves nothing before Recover.
func NewDriver(b Backend, opts DriverOptions) *Driver {
	c := opts.Clock
	if c == nil {
		c = RealClock{}
	}
	freq := opts.UpdateFrequency
	if freq <= 0 {
		freq = DefaultUpdateFrequency
	}
	conc := opts.MaxConcurrentRefills
	if conc <= 0 {
		conc = DefaultMaxConcurrentRefills
	}
	grace := opts.ShutdownGrace
	switch {
	case grace == 0:
		grace = defaultShutdownGrace
	case grace < 0:
		grace = 0
	}
	lim := opts.Limits
	if opts.Noop {
		// No pool: nothing is refilled, kept or recycled.
		lim = Limits{Batch: 1}
	}
	return &Driver{
		b: b, e: NewEngine(lim, c), clock: c, node: b.Node(), noop: opts.Noop, freq: freq, base: retryBase,
		createSem: make(chan struct{}, conc),
		ioSem:     make(chan struct{}, conc),
		kickC:     make(chan struct{}, 1),
		tickC:     make(chan chan struct{}, 1),
		deleteC:   make(chan Port, deleteQueue),
		markC:     make(chan markJob, markQueueLen),
		pools:     make(map[Key]*driverPool),
		marking:   make(map[string]chan struct{}),
		markBase:  markBackoff,

		onRefillError: opts.OnRefillError,
		shutdownGrace: grace,
	}
}

// Node is the Node of this driver's pool keys (Backend.Node).
func (d *Driver) Node() string { return d.node }

// Ready is true once Recover has loaded the pools.
func (d *Driver) Ready() bool { return d.ready.Load() }

// poolLocked returns the driver's record of key, creating it.
func (d *Driver) poolLocked(key Key) *driverPool {
	p := d.pools[key]
	if p == nil {
		p = &driverPool{}
		d.pools[key] = p
	}
	return p
}

// learn records how to create ports of key: subnets (when given) and the SG set last asked for.
func (d *Driver) learn(key Key, subnets []string, sgs SGSet) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.poolLocked(key)
	if len(subnets) > 0 && !slices.Equal(p.subnets, subnets) {
		p.subnets = slices.Clone(subnets)
	}
	p.sgs, p.sgsKnown = sgs, true
}

// EnsurePool remembers how to create ports of key (on subnetIDs, with sgs) and has it refilled to
// Limits.Min by Run.
func (d *Driver) EnsurePool(key Key, subnetIDs []string, sgs SGSet) {
	d.learn(key, subnetIDs, sgs)
	d.e.EnsurePool(key, sgs)
	d.kick()
}

// kick asks Run to plan refills now; kicks while one is pending coalesce.
func (d *Driver) kick() {
	select {
	case d.kickC <- struct{}{}:
	default:
	}
}

// reason is why a request for key is waiting: the last refill failure, or a refill in flight.
func (d *Driver) reason(key Key) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.pools[key]; p != nil && p.lastErr != "" {
		return p.lastErr
	}
	return refillWaitReason
}

// Acquire hands a port of req.Key to req.Owner. A free port is handed out without any Neutron call,
// unless it has to get req.SGs (UpdateSGs). With none free it waits for a refill until ctx is done,
// then returns a *PoolEmptyError. An owner that holds a port of the key gets it again.
func (d *Driver) Acquire(ctx context.Context, req AcquireRequest) (Port, error) {
	if !d.Ready() {
		return Port{}, fmt.Errorf("acquire a port of pool %s for %q: %w", req.Key, req.Owner, ErrNotReady)
	}
	d.learn(req.Key, req.SubnetIDs, req.SGs)
	if d.noop {
		return d.acquireNoop(ctx, req)
	}
	start := d.clock.Now()
	lastReason := ""
	for {
		g, err := d.e.Acquire(req.Key, req.SGs, req.Owner)
		if err == nil {
			d.kick() // top up behind the request, as kuryr does after every take
			if !g.RewriteSGs {
				return g.Port, nil
			}
			return d.rewriteSGs(ctx, g.Port, req.SGs)
		}
		var empty *EmptyError
		if !errors.As(err, &empty) {
			return Port{}, err
		}
		// The reason is read before the kick: it tells how the pool was when found empty, not
		// what a refill started by this very kick may already have done.
		r := d.reason(req.Key)
		d.kick()
		if r != lastReason {
			lastReason = r
			if req.OnWait != nil {
				req.OnWait(r)
			}
		}
		select {
		case <-empty.Wait:
		case <-ctx.Done():
			d.e.CancelWait(req.Key, req.Owner)
			return Port{}, &PoolEmptyError{Key: req.Key, Waited: d.clock.Now().Sub(start),
				InFlight: d.e.Stats(req.Key).InFlight, Reason: d.reason(req.Key)}
		}
	}
}

// rewriteSGs gives a port taken from another security-group group the SGs its pod needs.
func (d *Driver) rewriteSGs(ctx context.Context, p Port, sgs SGSet) (Port, error) {
	if err := d.b.UpdateSGs(ctx, p, sgs); err != nil {
		d.n.sgRewriteFail.Add(1)
		if aerr := d.e.Abort(p.ID); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return Port{}, fmt.Errorf("hand port %s of pool %s out with security groups %q: %w", p.ID, p.Key, sgs, err)
	}
	if err := d.e.SetSGs(p.ID, sgs); err != nil {
		return Port{}, err // only if the port was released meanwhile: the owner's own mistake
	}
	d.n.sgRewrites.Add(1)
	p.SGs = sgs
	return p, nil
}

// acquireNoop creates the pod's own port.
func (d *Driver) acquireNoop(ctx context.Context, req AcquireRequest) (Port, error) {
	if p, ok := d.e.Owner(req.Owner); ok {
		if p.Key != req.Key {
			return Port{}, fmt.Errorf("acquire a port of pool %s for %q: it holds port %s of pool %s: %w", req.Key, req.Owner, p.ID, p.Key, ErrConflict)
		}
		return p, nil
	}
	subnets := d.subnets(req.Key)
	if len(subnets) == 0 {
		return Port{}, fmt.Errorf("create a port of network %s for %q: no subnets known", req.Key.Network, req.Owner)
	}
	ports, err := d.b.CreatePorts(ctx, CreateRequest{Key: req.Key, SubnetIDs: subnets, SGs: req.SGs, Count: 1})
	if err == nil && len(ports) == 0 {
		err = errors.New("the backend created no port")
	}
	if err != nil {
		d.n.createFail.Add(1)
		d.deleteNow(ctx, ports)
		return Port{}, fmt.Errorf("create a port of pool %s for %q: %w", req.Key, req.Owner, err)
	}
	d.n.created.Add(int64(len(ports)))
	p := ports[0]
	d.deleteNow(ctx, ports[1:]) // a backend that made more than asked
	if p.Key == (Key{}) {
		p.Key = req.Key
	}
	if err := d.e.AddInUse(p, req.Owner); err != nil {
		d.deleteNow(ctx, ports[:1])
		return Port{}, err
	}
	return p, nil
}

// deleteNow deletes ports that never entered the engine, even if ctx is done (they would leak).
func (d *Driver) deleteNow(ctx context.Context, ports []Port) {
	if len(ports) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	failed := d.b.DeletePorts(ctx, ports)
	d.n.deleted.Add(int64(len(ports) - len(failed)))
	d.n.deleteFail.Add(int64(len(failed)))
	for id, err := range failed {
		klog.FromContext(ctx).Error(err, "delete a port no pool holds", "port", id)
	}
}

// Abort undoes an Acquire whose plug failed: the port is free again (noop: it is deleted).
func (d *Driver) Abort(portID string) error {
	if d.noop {
		p, err := d.e.Discard(portID)
		if err != nil {
			return err
		}
		d.queueDelete(p)
		return nil
	}
	return d.e.Abort(portID)
}

// Release is CNI DEL: the owner's port starts cooling and is recycled by Run once cooled (noop: it
// is deleted at once by Run). An owner that holds nothing is an ErrUnknownOwner error.
func (d *Driver) Release(owner string) (Port, error) {
	if d.noop {
		p, ok := d.e.Owner(owner)
		if !ok {
			return Port{}, fmt.Errorf("release %q: %w", owner, ErrUnknownOwner)
		}
		if _, err := d.e.Discard(p.ID); err != nil {
			return Port{}, fmt.Errorf("release %q: %w", owner, err)
		}
		d.queueDelete(p)
		return p, nil
	}
	p, err := d.e.Release(owner)
	if err == nil {
		d.kick()
	}
	return p, err
}

// queueDelete hands a discarded (busy, deleting) port to Run; with the queue full, the next tick
// deletes it.
func (d *Driver) queueDelete(p Port) {
	select {
	case d.deleteC <- p:
	default:
		d.e.DeleteFailed(p.ID)
	}
}

// MarkInUse records the pod on its port in Neutron (name and device_id), asynchronously: it never
// blocks. Run's workers retry a failure a few times with backoff and log it; a port released before
// its turn is not marked.
func (d *Driver) MarkInUse(p Port, name, deviceID string) {
	owner := d.e.InUseBy(p.ID)
	if owner == "" {
		return // released already: nothing to name
	}
	select {
	case d.markC <- markJob{p: p, name: name, deviceID: deviceID, owner: owner}:
	default:
		d.n.markDrop.Add(1)
		klog.Background().Info("MarkInUse queue full; port left unmarked", "port", p.ID, "pod", name)
	}
}

// Keys returns every pool key known, sorted.
func (d *Driver) Keys() []Key { return d.e.Keys() }

// Stats counts the ports of key by state.
func (d *Driver) Stats(key Key) Stats { return d.e.Stats(key) }

// FreePorts returns the free ports of key, most recently returned first.
func (d *Driver) FreePorts(key Key) []Port { return d.e.FreePorts(key) }

// PortState returns the state of a port the driver knows.
func (d *Driver) PortState(id string) (State, bool) {
	_, st, ok := d.e.Get(id)
	return st, ok
}

// Counters returns the cumulative counts.
func (d *Driver) Counters() DriverCounters {
	return DriverCounters{
		PortsCreated: d.n.created.Load(), CreateFailures: d.n.createFail.Load(),
		PortsRecycled: d.n.recycled.Load(), RecycleFailures: d.n.recycleFail.Load(),
		PortsDeleted: d.n.deleted.Load(), DeleteFailures: d.n.deleteFail.Load(),
		SGRewrites: d.n.sgRewrites.Load(), SGRewriteFailures: d.n.sgRewriteFail.Load(),
		MarkFailures: d.n.markFail.Load(), MarksDropped: d.n.markDrop.Load(),
	}
}

// Snapshot reports every pool, with its last refill error, and the counters.
func (d *Driver) Snapshot() DriverSnapshot {
	s := DriverSnapshot{Node: d.node, Ready: d.Ready(), Counters: d.Counters()}
	for _, k := range d.e.Keys() {
		ps := PoolStatus{Key: k, Stats: d.e.Stats(k)}
		d.mu.Lock()
		if p := d.pools[k]; p != nil {
			ps.LastError, ps.RetryAt = p.lastErr, p.retryAt
		}
		d.mu.Unlock()
		s.Pools = append(s.Pools, ps)
	}
	return s
}

func (d *Driver) subnets(key Key) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.pools[key]; p != nil {
		return p.subnets
	}
	return nil
}
