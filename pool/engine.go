package pool

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Errors of the engine, matched with errors.Is; the wrapping error names the port, owner or key.
var (
	// ErrEmpty: no free port in any security-group group of the key (see EmptyError).
	ErrEmpty = errors.New("no free port in pool")
	// ErrUnknownOwner: the owner holds no port. A CNI DEL treats it as success.
	ErrUnknownOwner = errors.New("owner holds no port")
	// ErrUnknownPort: the engine does not know the port ID.
	ErrUnknownPort = errors.New("unknown port")
	// ErrState: the port is not in a state the operation applies to.
	ErrState = errors.New("port in wrong state")
	// ErrConflict: the operation contradicts what the engine knows (an owner with a second port,
	// a port with a second owner).
	ErrConflict = errors.New("conflicting port ownership")
)

// EmptyError is what Acquire returns when no group of the key has a free port. The owner is then
// registered as waiting on the key (it raises the refill target) until it acquires or CancelWait.
type EmptyError struct {
	Key Key
	// Wait is closed the next time ports are added to the key or a refill of the key completes or
	// fails, so that waiters try again.
	Wait <-chan struct{}
	// InFlight is how many ports of the key are being created right now.
	InFlight int
}

// Error names the empty pool.
func (e *EmptyError) Error() string {
	return fmt.Sprintf("no free port in pool %s (%d in flight)", e.Key, e.InFlight)
}

// Is makes errors.Is(err, ErrEmpty) true.
func (e *EmptyError) Is(target error) bool { return target == ErrEmpty }

// Grant is a port handed to an owner by Acquire.
type Grant struct {
	// Port is the port as it is in Neutron now: Port.SGs are its current security groups.
	Port Port
	// RewriteSGs is true when the port came from another security-group group: the caller must
	// update the port's security groups in Neutron and then call SetSGs, or Abort on failure.
	RewriteSGs bool
}

// Engine is the single source of truth about which port is in which state. It does no I/O, starts
// no goroutine and reads time only through its Clock, so every decision is deterministic; drivers
// carry out what it plans and report back. All methods are safe for concurrent use.
//
// Ports handed out (Grant, Get, Owner, FreePorts, Snapshot...) share their FixedIPs
// with the engine, which never modifies them: treat them as read-only. Ports handed in are copied.
type Engine struct {
	mu      sync.Mutex
	clock   Clock
	limits  Limits
	pools   map[Key]*enginePool
	order   []*enginePool // pools sorted by key: deterministic planning without sorting per call
	ports   map[string]*engineEntry
	owners  map[string]*engineEntry
	tickets map[uint64]*refillTicket
	seq     uint64 // stamps every state change; orders LIFO groups and LRU choices
	ticket  uint64 // last refill ticket ID; never reused, not even across Restore
}

// engineEntry is one port known to the engine.
type engineEntry struct {
	port  Port
	pool  *enginePool
	state State
	owner string    // in-use only
	want  SGSet     // in-use only: the SG set the owner asked for (differs from port.SGs until SetSGs)
	since time.Time // when the port entered its state: release time when cooling, last return when free
	seq   uint64    // seq of the last state change
	busy  bool      // recycling/deleting: handed to a driver that has not reported back yet
}

// freeGroup holds the free ports of one SG set of a pool, oldest first: the last one is taken next.
type freeGroup struct {
	sgs     SGSet
	free    []*engineEntry
	updated uint64 // seq of the last port added: groups are picked least recently updated first
}

// enginePool is the state of one key.
type enginePool struct {
	key     Key
	sgs     SGSet // what refills create ports with: last requested, or EnsurePool's default
	groups  map[SGSet]*freeGroup
	n       Stats // every count but Waiting, kept up to date by setState and the refill code
	waiters map[string]struct{}
	wake    chan struct{} // made lazily for the first waiter, closed and dropped by wakeLocked
	// retired: the pool's network is going away (Retire); no refills, every port it gets back is
	// deleted, and the key is forgotten once it holds none. Not in snapshots: the agent retires
	// again from the KuryrNetwork it watches.
	retired bool
}

// refillTicket is a planned creation the driver has not reported yet.
type refillTicket struct {
	pool  *enginePool
	count int
}

// NewEngine returns an empty engine with the given limits, reading time from c.
func NewEngine(l Limits, c Clock) *Engine {
	return &Engine{
		clock:   c,
		limits:  normLimits(l),
		pools:   make(map[Key]*enginePool),
		ports:   make(map[string]*engineEntry),
		owners:  make(map[string]*engineEntry),
		tickets: make(map[uint64]*refillTicket),
	}
}

// normLimits makes nonsense values harmless: config validation rejects them before they get here,
// but a Batch of 0 would make the refill split loop forever.
func normLimits(l Limits) Limits {
	l.Min, l.Max = max(l.Min, 0), max(l.Max, 0)
	l.Batch = max(l.Batch, 1)
	l.Cooldown, l.IdleTimeout = max(l.Cooldown, 0), max(l.IdleTimeout, 0)
	return l
}

// SetLimits replaces the limits (config reload); the next Tick and PlanRefills apply them.
func (e *Engine) SetLimits(l Limits) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.limits = normLimits(l)
}

// Limits returns the limits in force, after normalisation (Batch at least 1).
func (e *Engine) Limits() Limits {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.limits
}

func compareKeys(a, b Key) int {
	return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Project, b.Project), cmp.Compare(a.Network, b.Network))
}

// poolLocked returns the pool of key, creating it (and so making the key known) if needed.
func (e *Engine) poolLocked(key Key) *enginePool {
	if p := e.pools[key]; p != nil {
		return p
	}
	p := &enginePool{key: key, groups: make(map[SGSet]*freeGroup)}
	e.pools[key] = p
	i, _ := slices.BinarySearchFunc(e.order, key, func(q *enginePool, k Key) int { return compareKeys(q.key, k) })
	e.order = slices.Insert(e.order, i, p)
	return p
}

func (s *Stats) count(st State) *int {
	switch st {
	case StateFree:
		return &s.Free
	case StateInUse:
		return &s.InUse
	case StateCooling:
		return &s.Cooling
	case StateRecycling:
		return &s.Recycling
	case StateDeleting:
		return &s.Deleting
	}
	panic(fmt.Sprintf("pool: unknown state %q", st))
}

func validState(st State) bool {
	switch st {
	case StateFree, StateInUse, StateCooling, StateRecycling, StateDeleting:
		return true
	}
	return false
}

// setState moves en to state st at time now and keeps the pool counts right. It does not touch
// groups, owners or busy: the callers do, because each transition needs something different.
func (e *Engine) setState(en *engineEntry, st State, now time.Time) {
	if en.state != "" {
		*en.pool.n.count(en.state)--
	}
	*en.pool.n.count(st)++
	en.state = st
	en.since = now
	e.seq++
	en.seq = e.seq
}

// pushFree makes en free at the top of its SG group (taken next).
func (e *Engine) pushFree(en *engineEntry, now time.Time) {
	e.setState(en, StateFree, now)
	en.owner, en.want, en.busy = "", "", false
	p := en.pool
	g := p.groups[en.port.SGs]
	if g == nil {
		g = &freeGroup{sgs: en.port.SGs}
		p.groups[g.sgs] = g
	}
	g.free = append(g.free, en)
	g.updated = en.seq
}

// wakeLocked tells the waiters of p to try again.
func wakeLocked(p *enginePool) {
	if p.wake != nil {
		close(p.wake)
		p.wake = nil
	}
}

func clonePort(p Port) Port {
	p.FixedIPs = slices.Clone(p.FixedIPs)
	return p
}

// AddFree adds ports as free, each at the top of its key's group for its SGs (loaded at start or
// just created). It is idempotent by ID: a port already known is left as it is. added[i] reports
// whether ports[i] was new; a port without ID is not added. Waiters of the keys are woken.
func (e *Engine) AddFree(ports ...Port) (added []bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.addFreeLocked(ports, Key{}, false)
}

// addFreeLocked adds ports; with fill, ports without a key get key.
func (e *Engine) addFreeLocked(ports []Port, key Key, fill bool) []bool {
	added := make([]bool, len(ports))
	now := e.clock.Now()
	for i, pt := range ports {
		if pt.ID == "" || e.ports[pt.ID] != nil {
			continue
		}
		if fill && pt.Key == (Key{}) {
			pt.Key = key
		}
		en := &engineEntry{port: clonePort(pt), pool: e.poolLocked(pt.Key)}
		e.ports[pt.ID] = en
		e.pushFree(en, now)
		wakeLocked(en.pool)
		added[i] = true
	}
	return added
}

// AddInUse adds a port held by owner (restored from the agent's checkpoint). Adding the same port
// with the same owner again is a no-op; a port known in another state or with another owner, or an
// owner that holds another port, is an error.
func (e *Engine) AddInUse(p Port, owner string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case p.ID == "":
		return fmt.Errorf("add in-use port for owner %q: empty port ID", owner)
	case owner == "":
		return fmt.Errorf("add in-use port %s: empty owner", p.ID)
	}
	if en := e.ports[p.ID]; en != nil {
		if en.state == StateInUse && en.owner == owner {
			return nil
		}
		return fmt.Errorf("add port %s as in use by %q: it is %s (owner %q): %w", p.ID, owner, en.state, en.owner, ErrConflict)
	}
	if en := e.owners[owner]; en != nil {
		return fmt.Errorf("add port %s as in use by %q: the owner holds port %s: %w", p.ID, owner, en.port.ID, ErrConflict)
	}
	en := &engineEntry{port: clonePort(p), pool: e.poolLocked(p.Key), owner: owner, want: p.SGs}
	e.setState(en, StateInUse, e.clock.Now())
	e.ports[p.ID] = en
	e.owners[owner] = en
	delete(en.pool.waiters, owner)
	return nil
}

// Acquire hands a free port of key to owner ("<containerID>/<ifname>"), for a pod with security
// groups sgs. It takes the most recently returned port of the group sgs; if that group is empty, the
// most recent port of the least recently updated non-empty group, with RewriteSGs set. It is
// idempotent: an owner that already holds a port of key gets the same grant again. An owner holds at
// most one port: holding one of another key is an ErrConflict. When the key has no free port at
// all, the error is an *EmptyError and owner is registered as waiting on key.
func (e *Engine) Acquire(key Key, sgs SGSet, owner string) (Grant, error) {
	if owner == "" {
		return Grant{}, fmt.Errorf("acquire a port of pool %s: empty owner", key)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.owners[owner]; en != nil {
		if en.port.Key != key {
			return Grant{}, fmt.Errorf("acquire a port of pool %s for %q: it holds port %s of pool %s: %w", key, owner, en.port.ID, en.port.Key, ErrConflict)
		}
		en.want = sgs
		return Grant{Port: en.port, RewriteSGs: en.port.SGs != sgs}, nil
	}
	p := e.poolLocked(key)
	p.sgs = sgs
	g := p.groups[sgs]
	if g == nil || len(g.free) == 0 {
		g = oldestGroup(p)
	}
	if g == nil {
		if p.waiters == nil {
			p.waiters = make(map[string]struct{})
		}
		p.waiters[owner] = struct{}{}
		if p.wake == nil {
			p.wake = make(chan struct{})
		}
		return Grant{}, &EmptyError{Key: key, Wait: p.wake, InFlight: p.n.InFlight}
	}
	last := len(g.free) - 1
	en := g.free[last]
	g.free[last] = nil
	g.free = g.free[:last]
	e.setState(en, StateInUse, e.clock.Now())
	en.owner, en.want = owner, sgs
	e.owners[owner] = en
	delete(p.waiters, owner)
	return Grant{Port: en.port, RewriteSGs: en.port.SGs != sgs}, nil
}

// oldestGroup is the least recently updated non-empty group of p, or nil.
func oldestGroup(p *enginePool) *freeGroup {
	var best *freeGroup
	for _, g := range p.groups {
		if len(g.free) == 0 {
			continue
		}
		if best == nil || g.updated < best.updated || g.updated == best.updated && g.sgs < best.sgs {
			best = g
		}
	}
	return best
}

// CancelWait stops counting owner as waiting on key (its request gave up).
func (e *Engine) CancelWait(key Key, owner string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p := e.pools[key]; p != nil {
		delete(p.waiters, owner)
	}
}

// SetSGs records the security groups a port has in Neutron now: after the SG rewrite an Acquire
// asked for, or (for a port not in a pool group: cooling or recycling) when a driver saw that a
// network policy changed them. Free and deleting ports are refused: a free port's SGs are its group.
func (e *Engine) SetSGs(portID string, sgs SGSet) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	en := e.ports[portID]
	if en == nil {
		return fmt.Errorf("set security groups of port %s: %w", portID, ErrUnknownPort)
	}
	switch en.state {
	case StateInUse, StateCooling, StateRecycling:
		en.port.SGs = sgs
		return nil
	}
	return fmt.Errorf("set security groups of port %s: it is %s: %w", portID, en.state, ErrState)
}

// Abort undoes an Acquire before anything was plugged: the port is free again, at the top of the
// group of the SGs it has now, without cooldown.
func (e *Engine) Abort(portID string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	en := e.ports[portID]
	if en == nil {
		return fmt.Errorf("abort port %s: %w", portID, ErrUnknownPort)
	}
	if en.state != StateInUse {
		return fmt.Errorf("abort port %s: it is %s, not in use: %w", portID, en.state, ErrState)
	}
	delete(e.owners, en.owner)
	e.pushFree(en, e.clock.Now())
	wakeLocked(en.pool)
	return nil
}

// Release is CNI DEL: the owner's port starts cooling, with the release time now. It returns
// ErrUnknownOwner when the owner holds nothing (DEL is idempotent: the caller treats that as done).
func (e *Engine) Release(owner string) (Port, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en := e.owners[owner]
	if en == nil {
		return Port{}, fmt.Errorf("release %q: %w", owner, ErrUnknownOwner)
	}
	delete(e.owners, owner)
	e.setState(en, StateCooling, e.clock.Now())
	en.owner, en.want = "", ""
	return en.port, nil
}

// Owner returns the port owner holds.
func (e *Engine) Owner(owner string) (Port, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.owners[owner]; en != nil {
		return en.port, true
	}
	return Port{}, false
}

// InUseBy returns the owner of a port in use, "" when it is not in use.
func (e *Engine) InUseBy(portID string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.ports[portID]; en != nil && en.state == StateInUse {
		return en.owner
	}
	return ""
}

// Get returns a port and its state.
func (e *Engine) Get(portID string) (Port, State, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.ports[portID]; en != nil {
		return en.port, en.state, true
	}
	return Port{}, "", false
}

// EnsurePool makes key known, so that Tick keeps it at Limits.Min, and sets the SGs its refills
// create ports with until an Acquire asks for others.
func (e *Engine) EnsurePool(key Key, defaultSGs SGSet) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.poolLocked(key)
	p.sgs, p.retired = defaultSGs, false
}

// Keys returns every known key, sorted.
func (e *Engine) Keys() []Key {
	e.mu.Lock()
	defer e.mu.Unlock()
	keys := make([]Key, len(e.order))
	for i, p := range e.order {
		keys[i] = p.key
	}
	return keys
}

// Stats counts the ports of key by state; zero for an unknown key.
func (e *Engine) Stats(key Key) Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pools[key]
	if p == nil {
		return Stats{}
	}
	s := p.n
	s.Waiting = len(p.waiters)
	return s
}

// freeEntries returns the free ports of p, least recently returned first.
func freeEntries(p *enginePool) []*engineEntry {
	var all []*engineEntry
	for _, g := range p.groups {
		all = append(all, g.free...)
	}
	slices.SortFunc(all, bySeq)
	return all
}

func bySeq(a, b *engineEntry) int {
	return cmp.Or(cmp.Compare(a.seq, b.seq), cmp.Compare(a.port.ID, b.port.ID))
}

// FreePorts returns the free ports of key, most recently returned first (across groups).
func (e *Engine) FreePorts(key Key) []Port {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pools[key]
	if p == nil {
		return nil
	}
	all := freeEntries(p)
	ports := make([]Port, len(all))
	for i, en := range all {
		ports[len(all)-1-i] = en.port
	}
	return ports
}
