package pool

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Snapshot is the whole engine state for the agent's checkpoint, JSON-serialisable and in a
// deterministic order. Refills in flight and the busy marks of recycling and deleting ports are not
// part of it: after a restart nothing is in flight, and the next Tick plans those ports again.
type Snapshot struct {
	// Seq is the engine's order counter; the seqs below are stamps of it.
	Seq   uint64         `json:"seq"`
	Pools []PoolSnapshot `json:"pools"`
	Ports []PortSnapshot `json:"ports"`
}

// PoolSnapshot is a known key, sorted by key in a Snapshot.
type PoolSnapshot struct { //nolint:revive // the element of Snapshot.Pools; a bare "Pool" would read as a live pool
	Key Key `json:"key"`
	// SGs is what refills of the key create ports with.
	SGs    SGSet           `json:"sgs"`
	Groups []GroupSnapshot `json:"groups,omitempty"`
}

// GroupSnapshot is the order of one security-group group of free ports, sorted by SGs.
type GroupSnapshot struct {
	SGs SGSet `json:"sgs"`
	// Updated is the Seq of the last port added to the group: the least recently updated group
	// gives its ports to requests of other SG sets first.
	Updated uint64 `json:"updated"`
}

// PortSnapshot is one port, sorted by port ID in a Snapshot.
type PortSnapshot struct {
	Port  Port  `json:"port"`
	State State `json:"state"`
	// Owner holds an in-use port ("<containerID>/<ifname>").
	Owner string `json:"owner,omitempty"`
	// WantSGs is the SG set the owner of an in-use port asked for; it differs from Port.SGs while
	// the rewrite is pending.
	WantSGs SGSet `json:"wantSgs,omitempty"`
	// Since is when the port entered its state: the release time of a cooling port, the last return
	// of a free one.
	Since time.Time `json:"since"`
	// Seq orders the ports' last state changes: LIFO within a group, least recently used first.
	Seq uint64 `json:"seq"`
}

// Snapshot returns the whole state.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Snapshot{Seq: e.seq, Pools: make([]PoolSnapshot, 0, len(e.order)), Ports: make([]PortSnapshot, 0, len(e.ports))}
	for _, p := range e.order {
		ps := PoolSnapshot{Key: p.key, SGs: p.sgs}
		for _, g := range p.groups {
			if len(g.free) == 0 {
				continue // an empty group means nothing: the next port added updates it
			}
			ps.Groups = append(ps.Groups, GroupSnapshot{SGs: g.sgs, Updated: g.updated})
		}
		slices.SortFunc(ps.Groups, func(a, b GroupSnapshot) int { return cmp.Compare(a.SGs, b.SGs) })
		s.Pools = append(s.Pools, ps)
	}
	// Sort pointers, not the big PortSnapshot values: the checkpoint is written on every ADD and DEL.
	entries := make([]*engineEntry, 0, len(e.ports))
	for _, en := range e.ports {
		entries = append(entries, en)
	}
	slices.SortFunc(entries, func(a, b *engineEntry) int { return cmp.Compare(a.port.ID, b.port.ID) })
	for _, en := range entries {
		s.Ports = append(s.Ports, PortSnapshot{
			Port: en.port, State: en.state, Owner: en.owner, WantSGs: en.want,
			Since: en.since.Round(0), // no monotonic reading: it means nothing in a checkpoint
			Seq:   en.seq,
		})
	}
	return s
}

// Restore replaces the whole state with s. Nothing is in flight afterwards and no port is busy;
// waiters are woken and forgotten (they try again and wait anew). An invalid snapshot (a port
// without ID or listed twice, an unknown state, an in-use port without owner or an owner with two
// ports, a key or group listed twice) is an error naming what is wrong, and leaves the state as is.
func (e *Engine) Restore(s Snapshot) error {
	n := NewEngine(Limits{}, nil)
	n.seq = s.Seq
	updated := make(map[Key]map[SGSet]uint64)
	for _, ps := range s.Pools {
		if _, dup := updated[ps.Key]; dup {
			return fmt.Errorf("restore: pool %s listed twice", ps.Key)
		}
		upd := make(map[SGSet]uint64, len(ps.Groups))
		for _, g := range ps.Groups {
			if _, dup := upd[g.SGs]; dup {
				return fmt.Errorf("restore: pool %s: group %q listed twice", ps.Key, g.SGs)
			}
			upd[g.SGs] = g.Updated
		}
		updated[ps.Key] = upd
		n.poolLocked(ps.Key).sgs = ps.SGs
	}
	for i, ps := range s.Ports {
		id := ps.Port.ID
		switch {
		case id == "":
			return fmt.Errorf("restore: port #%d has no ID", i)
		case n.ports[id] != nil:
			return fmt.Errorf("restore: port %s listed twice", id)
		case !validState(ps.State):
			return fmt.Errorf("restore: port %s: unknown state %q", id, ps.State)
		case ps.State == StateInUse && ps.Owner == "":
			return fmt.Errorf("restore: port %s: in use without owner", id)
		case ps.State != StateInUse && ps.Owner != "":
			return fmt.Errorf("restore: port %s: %s but owned by %q", id, ps.State, ps.Owner)
		case ps.Owner != "" && n.owners[ps.Owner] != nil:
			return fmt.Errorf("restore: port %s: owner %q also holds port %s", id, ps.Owner, n.owners[ps.Owner].port.ID)
		}
		en := &engineEntry{port: clonePort(ps.Port), pool: n.poolLocked(ps.Port.Key), state: ps.State, since: ps.Since, seq: ps.Seq}
		*en.pool.n.count(ps.State)++
		n.seq = max(n.seq, ps.Seq)
		n.ports[id] = en
		switch ps.State {
		case StateInUse:
			en.owner, en.want = ps.Owner, ps.WantSGs
			n.owners[ps.Owner] = en
		case StateFree:
			g := en.pool.groups[en.port.SGs]
			if g == nil {
				g = &freeGroup{sgs: en.port.SGs, updated: updated[en.pool.key][en.port.SGs]}
				en.pool.groups[g.sgs] = g
			}
			g.free = append(g.free, en)
			g.updated = max(g.updated, en.seq)
		}
	}
	for _, p := range n.order {
		for _, g := range p.groups {
			slices.SortFunc(g.free, bySeq)
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.order {
		wakeLocked(p)
	}
	e.pools, e.order, e.ports, e.owners, e.tickets = n.pools, n.order, n.ports, n.owners, n.tickets
	e.seq = max(n.seq, e.seq)
	return nil
}
