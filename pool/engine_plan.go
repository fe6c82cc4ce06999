package pool

import (
	"slices"
	"time"
)

// Plan is what one Tick asks the drivers to do. Every port and ticket in it is marked busy, so that
// the next Tick does not plan it again before the driver reports back.
type Plan struct {
	// Recycle: cooled ports, now recycling. Reset name and device_id in Neutron, then Recycled or
	// RecycleFailed.
	Recycle []Port
	// Delete: ports marked for deletion. Detach and delete them, then Deleted or DeleteFailed.
	Delete []Port
	// Refills: ports to create, as PlanRefills returns them.
	Refills []Refill
}

// Refill asks a driver to create Count ports of Key with SGs, then to call RefillDone with ID.
type Refill struct {
	ID    uint64 // ticket
	Key   Key
	SGs   SGSet // the SG set last requested on the key, or EnsurePool's default
	Count int   // at most Limits.Batch
	// Forced marks an explicit Populate (management API) rather than the engine's own top-up.
	Forced bool
}

// Tick is the ports_pool_update_frequency loop. With now = clock.Now(), per key:
//   - a cooling port released at least Cooldown ago is recycled, or marked for deletion when the
//     key's free + recycling ports already reach a non-zero Max;
//   - free ports above a non-zero Max are marked for deletion, least recently used first;
//   - with IdleTimeout > 0, free ports unused for longer than it are marked for deletion, least
//     recently used first, but never below Min;
//   - recycling and deleting ports no driver is working on are planned (again);
//
// and refills are planned as PlanRefills does.
func (e *Engine) Tick() Plan {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	lim := e.limits
	var plan Plan

	// Ports out of the groups, per pool, in the order of their last state change.
	out := make(map[*enginePool][]*engineEntry)
	for _, en := range e.ports {
		if en.state == StateCooling || en.state == StateRecycling || en.state == StateDeleting {
			out[en.pool] = append(out[en.pool], en)
		}
	}
	for _, p := range e.order {
		list := out[p]
		slices.SortFunc(list, bySeq)
		for _, en := range list {
			if en.state != StateCooling || now.Sub(en.since) < lim.Cooldown && !p.retired {
				continue
			}
			if p.retired || lim.Max > 0 && p.n.Free+p.n.Recycling >= lim.Max {
				plan.Delete = append(plan.Delete, e.markLocked(en, StateDeleting, now))
			} else {
				plan.Recycle = append(plan.Recycle, e.markLocked(en, StateRecycling, now))
			}
		}

		removed := false
		if p.retired && p.n.Free > 0 {
			plan.Delete = append(plan.Delete, e.freeLocked(p)...)
		} else if lim.Max > 0 && p.n.Free > lim.Max || lim.IdleTimeout > 0 && p.n.Free > lim.Min {
			for _, en := range freeEntries(p) {
				surplus := lim.Max > 0 && p.n.Free > lim.Max
				idle := lim.IdleTimeout > 0 && p.n.Free > lim.Min && now.Sub(en.since) > lim.IdleTimeout
				if !surplus && !idle {
					continue
				}
				plan.Delete = append(plan.Delete, e.markLocked(en, StateDeleting, now))
				removed = true
			}
		}
		// Compact the groups, and forget empty ones so that SG sets seen once do not pile up.
		for sgs, g := range p.groups {
			if removed {
				g.free = slices.DeleteFunc(g.free, func(en *engineEntry) bool { return en.state != StateFree })
			}
			if len(g.free) == 0 {
				delete(p.groups, sgs)
			}
		}

		for _, en := range list {
			if !en.busy && (en.state == StateRecycling || en.state == StateDeleting) {
				en.busy = true
				if en.state == StateRecycling {
					plan.Recycle = append(plan.Recycle, en.port)
				} else {
					plan.Delete = append(plan.Delete, en.port)
				}
			}
		}
	}
	for _, p := range slices.Clone(e.order) {
		e.forgetRetiredLocked(p)
	}
	plan.Refills = e.planRefillsLocked()
	return plan
}

// markLocked moves en to st (recycling or deleting) as busy, and returns its port for the plan. A
// free port stays in its group's slice until the caller compacts the group.
func (e *Engine) markLocked(en *engineEntry, st State, now time.Time) Port {
	e.setState(en, st, now)
	en.busy = true
	return en.port
}

// PlanRefills plans the port creations each known key needs; it is cheap enough to call after
// every Acquire, Release and driver report. Per key: available = free + recycling + in flight
// (cooling ports are not available: they cannot be handed out yet), target = max(Min, waiting
// owners). Below target it plans max(Batch, target - available) ports, but never past a non-zero
// Max, in tickets of at most Batch, and counts them in flight until RefillDone.
func (e *Engine) PlanRefills() []Refill {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.planRefillsLocked()
}

func (e *Engine) planRefillsLocked() []Refill {
	var refills []Refill
	lim := e.limits
	for _, p := range e.order {
		if p.retired {
			continue
		}
		available := p.n.Free + p.n.Recycling + p.n.InFlight
		need := max(lim.Min, len(p.waiters)) - available
		if need <= 0 {
			continue
		}
		total := max(lim.Batch, need)
		if lim.Max > 0 {
			total = min(total, lim.Max-available)
		}
		refills = e.ticketsLocked(refills, p, p.sgs, total, false)
	}
	return refills
}

// ticketsLocked appends tickets for total ports of p, at most Batch each, and counts them in flight.
func (e *Engine) ticketsLocked(refills []Refill, p *enginePool, sgs SGSet, total int, forced bool) []Refill {
	for total > 0 {
		n := min(total, e.limits.Batch)
		e.ticket++
		e.tickets[e.ticket] = &refillTicket{pool: p, count: n}
		p.n.InFlight += n
		refills = append(refills, Refill{ID: e.ticket, Key: p.key, SGs: sgs, Count: n, Forced: forced})
		total -= n
	}
	return refills
}

// RefillDone reports ticket id: created ports become free (a port without key gets the ticket's),
// the ticket no longer counts in flight, and the key's waiters are woken whether it worked or not.
// created is honoured even for a ticket the engine no longer knows (planned before a Restore), so
// that no created port is leaked. err is for the caller's logs: the engine plans again on demand.
func (e *Engine) RefillDone(id uint64, created []Port, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var key Key
	t := e.tickets[id]
	if t != nil {
		delete(e.tickets, id)
		t.pool.n.InFlight -= t.count
		key = t.pool.key
		wakeLocked(t.pool)
	}
	e.addFreeLocked(created, key, t != nil)
}

// Recycled reports that a recycling port was reset in Neutron: it becomes free, at the top of its
// group. A report for a port that is not recycling (it was freed or restored meanwhile) is ignored.
func (e *Engine) Recycled(portID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.ports[portID]; en != nil && en.state == StateRecycling {
		e.pushFree(en, e.clock.Now())
		wakeLocked(en.pool)
	}
}

// RecycleGone reports that a recycling port no longer exists in Neutron: the engine forgets it.
func (e *Engine) RecycleGone(portID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.ports[portID]; en != nil && en.state == StateRecycling {
		en.pool.n.Recycling--
		delete(e.ports, portID)
	}
}

// RecycleFailed reports that resetting a recycling port failed: the next Tick plans it again.
func (e *Engine) RecycleFailed(portID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.ports[portID]; en != nil && en.state == StateRecycling {
		en.busy = false
	}
}

// Deleted reports that a deleting port is gone from Neutron: the engine forgets it.
func (e *Engine) Deleted(portID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.ports[portID]; en != nil && en.state == StateDeleting {
		en.pool.n.Deleting--
		delete(e.ports, portID)
	}
}

// DeleteFailed reports that deleting a port failed: the next Tick plans it again.
func (e *Engine) DeleteFailed(portID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.ports[portID]; en != nil && en.state == StateDeleting {
		en.busy = false
	}
}

// Populate is the management API's explicit populate: tickets for n ports of key with sgs, at most
// Batch each, marked Forced. Without force it never plans past a non-zero Max (counting free,
// recycling and in-flight ports) and capped says how many of the n it refused. A key it makes known
// gets sgs as its refill SGs.
func (e *Engine) Populate(key Key, sgs SGSet, n int, force bool) (tickets []Refill, capped int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, known := e.pools[key]
	p := e.poolLocked(key)
	if !known {
		p.sgs = sgs
	}
	p.retired = false
	n = max(n, 0)
	if !force && e.limits.Max > 0 {
		room := max(e.limits.Max-(p.n.Free+p.n.Recycling+p.n.InFlight), 0)
		capped = max(n-room, 0)
		n -= capped
	}
	return e.ticketsLocked(nil, p, sgs, n, true), capped
}

// Free is the management API's free: every free port of key is marked for deletion (busy) and
// returned, most recently returned first, for the driver to delete. In-use, cooling and recycling
// ports are untouched, and a non-zero Min refills the key on the next Tick.
func (e *Engine) Free(key Key) []Port {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pools[key]
	if p == nil {
		return nil
	}
	return e.freeLocked(p)
}

func (e *Engine) freeLocked(p *enginePool) []Port {
	now := e.clock.Now()
	all := freeEntries(p)
	ports := make([]Port, len(all))
	for i, en := range all {
		ports[len(all)-1-i] = e.markLocked(en, StateDeleting, now)
	}
	clear(p.groups)
	return ports
}

// PopulateEmpty is Populate (not forced) for a key that holds no port at all: not free, in use,
// cooling, recycling, deleting or in flight, and with no request waiting. It is the agents'
// pre-population of a new namespace subnet, which must not add to a pool that is already in use
// or filling (after a restart, say). For any other key it plans nothing.
func (e *Engine) PopulateEmpty(key Key, sgs SGSet, n int) []Refill {
	e.mu.Lock()
	p := e.pools[key]
	busy := p != nil && (p.n != Stats{} || len(p.waiters) > 0)
	e.mu.Unlock()
	if busy {
		return nil
	}
	tickets, _ := e.Populate(key, sgs, n, false)
	return tickets
}

// Retire is for a pool whose network is going away (its namespace was deleted): no refill is
// planned for key any more, its free ports are returned marked for deletion as Free returns them,
// and from then on every port it gets back (released, recycled, created by a refill already in
// flight) is deleted by Tick. Once it holds no port the key is forgotten. EnsurePool or Populate
// make it live again.
func (e *Engine) Retire(key Key) []Port {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pools[key]
	if p == nil {
		return nil
	}
	p.retired = true
	ports := e.freeLocked(p)
	e.forgetRetiredLocked(p)
	return ports
}

// forgetRetiredLocked drops a retired pool that holds nothing any more.
func (e *Engine) forgetRetiredLocked(p *enginePool) {
	if !p.retired || p.n != (Stats{}) || len(p.waiters) > 0 {
		return
	}
	delete(e.pools, p.key)
	e.order = slices.DeleteFunc(e.order, func(q *enginePool) bool { return q == p })
}
