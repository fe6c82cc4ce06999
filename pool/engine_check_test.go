package pool

import (
	"fmt"
	"sync"
	"time"
)

// engClock is the fake clock of the engine tests.
type engClock struct {
	mu sync.Mutex
	t  time.Time
}

func newEngClock() *engClock {
	return &engClock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
}

func (c *engClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *engClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// checkEngine verifies every invariant of the engine's state, through its internals and through the
// public API: each port in exactly one state and place, owners one-to-one with in-use ports, counts
// and Stats derived from the ports, in-flight equal to the open tickets and never negative.
func checkEngine(e *Engine) error {
	_, err := checkEngineSnapshot(e)
	return err
}

// checkEngineSnapshot is checkEngine returning the snapshot it checked.
func checkEngineSnapshot(e *Engine) (Snapshot, error) {
	if err := checkInternals(e); err != nil {
		return Snapshot{}, err
	}
	// Stats through the public API against counts derived from the public Snapshot.
	s := e.Snapshot()
	derived := make(map[Key]*Stats)
	for _, k := range e.Keys() {
		derived[k] = &Stats{}
	}
	for _, ps := range s.Ports {
		d := derived[ps.Port.Key]
		if d == nil {
			return s, fmt.Errorf("port %s of key %s that Keys does not list", ps.Port.ID, ps.Port.Key)
		}
		*d.count(ps.State)++
	}
	for k, d := range derived {
		got := e.Stats(k)
		if got.InFlight < 0 || got.Waiting < 0 {
			return s, fmt.Errorf("pool %s: negative stats %+v", k, got)
		}
		got.InFlight, got.Waiting = 0, 0
		if got != *d {
			return s, fmt.Errorf("pool %s: Stats %+v, derived from the ports %+v", k, got, *d)
		}
		if free := e.FreePorts(k); len(free) != d.Free {
			return s, fmt.Errorf("pool %s: FreePorts lists %d ports, %d are free", k, len(free), d.Free)
		}
	}
	return s, nil
}

func checkInternals(e *Engine) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.order) != len(e.pools) {
		return fmt.Errorf("%d pools in order, %d in the map", len(e.order), len(e.pools))
	}
	for i, p := range e.order {
		if e.pools[p.key] != p {
			return fmt.Errorf("pool %s in order is not the map's", p.key)
		}
		if i > 0 && compareKeys(e.order[i-1].key, p.key) >= 0 {
			return fmt.Errorf("pools out of order at %s", p.key)
		}
	}
	inGroup := make(map[*engineEntry]int)
	counts := make(map[*enginePool]*Stats)
	for _, p := range e.order {
		counts[p] = &Stats{}
		for sgs, g := range p.groups {
			if g.sgs != sgs {
				return fmt.Errorf("pool %s: group %q filed under %q", p.key, g.sgs, sgs)
			}
			for i, en := range g.free {
				if en.state != StateFree {
					return fmt.Errorf("port %s in group %q of pool %s is %s", en.port.ID, sgs, p.key, en.state)
				}
				if en.pool != p || en.port.SGs != sgs {
					return fmt.Errorf("port %s (key %s, SGs %q) in group %q of pool %s", en.port.ID, en.port.Key, en.port.SGs, sgs, p.key)
				}
				if i > 0 && bySeq(g.free[i-1], en) >= 0 {
					return fmt.Errorf("group %q of pool %s out of order at port %s", sgs, p.key, en.port.ID)
				}
				if en.seq > g.updated {
					return fmt.Errorf("group %q of pool %s updated %d before its port %s (%d)", sgs, p.key, g.updated, en.port.ID, en.seq)
				}
				inGroup[en]++
			}
		}
	}
	inUse := 0
	for id, en := range e.ports {
		if en.port.ID != id {
			return fmt.Errorf("port %s filed under %s", en.port.ID, id)
		}
		if !validState(en.state) {
			return fmt.Errorf("port %s in unknown state %q", id, en.state)
		}
		if e.pools[en.port.Key] != en.pool {
			return fmt.Errorf("port %s of key %s is in pool %s", id, en.port.Key, en.pool.key)
		}
		if en.seq > e.seq {
			return fmt.Errorf("port %s seq %d beyond the engine's %d", id, en.seq, e.seq)
		}
		*counts[en.pool].count(en.state)++
		if want := map[bool]int{true: 1}[en.state == StateFree]; inGroup[en] != want {
			return fmt.Errorf("%s port %s is in %d groups", en.state, id, inGroup[en])
		}
		delete(inGroup, en)
		if en.state == StateInUse {
			inUse++
			if en.owner == "" || e.owners[en.owner] != en {
				return fmt.Errorf("in-use port %s: owner %q does not map back to it", id, en.owner)
			}
		} else if en.owner != "" {
			return fmt.Errorf("%s port %s has owner %q", en.state, id, en.owner)
		}
		if en.busy && en.state != StateRecycling && en.state != StateDeleting {
			return fmt.Errorf("%s port %s is busy", en.state, id)
		}
	}
	if len(inGroup) > 0 {
		return fmt.Errorf("%d ports in groups that the engine does not know", len(inGroup))
	}
	if len(e.owners) != inUse {
		return fmt.Errorf("%d owners for %d in-use ports", len(e.owners), inUse)
	}
	for o, en := range e.owners {
		if en.owner != o || e.ports[en.port.ID] != en {
			return fmt.Errorf("owner %q maps to port %s owned by %q", o, en.port.ID, en.owner)
		}
	}
	for id, t := range e.tickets {
		if t.count <= 0 || id > e.ticket || e.pools[t.pool.key] != t.pool {
			return fmt.Errorf("bad ticket %d: %d ports of %s", id, t.count, t.pool.key)
		}
		counts[t.pool].InFlight += t.count
	}
	for p, c := range counts {
		got := p.n
		got.Waiting = 0
		if got != *c {
			return fmt.Errorf("pool %s: counts %+v, derived %+v", p.key, got, *c)
		}
	}
	return nil
}
