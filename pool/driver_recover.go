package pool

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"k8s.io/klog/v2"
)

// RecoverReport says what Recover found.
type RecoverReport struct {
	// Listed is how many ports ListPorts returned.
	Listed int
	// Free, InUse and Cooling count the listed ports loaded in those states.
	Free, InUse, Cooling int
	// Deleting counts the listed ports the next tick deletes: nested ports not attached to the
	// node's trunk that no pod holds, and with the noop driver every port no pod holds.
	Deleting int
	// Missing are the IDs of inUse and cooling ports Neutron no longer has, sorted: the agent
	// forgets them.
	Missing []string
	// Detached are in-use nested ports not attached to the trunk, sorted. They stay in use (a pod
	// holds them); the report names them for the logs.
	Detached []string
}

// Recover loads the node's ports at start with one ListPorts (a constant number of requests) and
// replaces the engine's state with them: the ports of inUse (port ID -> owner, from the agent's
// checkpoint) are in use, those of cooling (port ID -> release time) are cooling, nested ports
// not attached to the trunk and ports named DeletingPortName (an earlier run was deleting them) are
// deleted by the next tick (kuryr deletes ACTIVE but detached subports), and every other port is
// free in its pool, pre-created ones included. With the noop
// driver, which keeps no pool, every port no pod holds is deleted. Then the driver is ready.
//
// It is meant to run before the driver serves requests; called again later it re-syncs with
// Neutron, and refills in flight still add their ports. A failed Recover changes nothing.
func (d *Driver) Recover(ctx context.Context, inUse map[string]string, cooling map[string]time.Time) (RecoverReport, error) {
	log := klog.FromContext(ctx)
	listed, err := d.b.ListPorts(ctx)
	if err != nil {
		return RecoverReport{}, fmt.Errorf("load the pools of node %s: %w", d.node, err)
	}
	slices.SortStableFunc(listed, func(a, b ListedPort) int { return cmp.Compare(a.ID, b.ID) })

	cur := d.e.Snapshot()
	snap := Snapshot{Seq: cur.Seq, Pools: make([]PoolSnapshot, 0, len(cur.Pools))}
	for _, p := range cur.Pools {
		snap.Pools = append(snap.Pools, PoolSnapshot{Key: p.Key, SGs: p.SGs}) // EnsurePool's SGs
	}
	now := d.clock.Now()
	rep := RecoverReport{Listed: len(listed)}
	seen := make(map[string]bool, len(listed))
	for _, lp := range listed {
		if lp.ID == "" || seen[lp.ID] {
			continue // a listing paged across a change may repeat a port
		}
		seen[lp.ID] = true
		ps := PortSnapshot{Port: lp.Port, Since: now}
		owner, used := inUse[lp.ID]
		releasedAt, released := cooling[lp.ID]
		switch {
		case used:
			ps.State, ps.Owner, ps.WantSGs = StateInUse, owner, lp.SGs
			rep.InUse++
			if !lp.Attached {
				rep.Detached = append(rep.Detached, lp.ID)
			}
		case !lp.Attached || d.noop || lp.Name == DeletingPortName:
			ps.State = StateDeleting
			rep.Deleting++
		case released:
			ps.State, ps.Since = StateCooling, releasedAt
			rep.Cooling++
		default:
			ps.State = StateFree
			rep.Free++
		}
		snap.Seq++
		ps.Seq = snap.Seq
		snap.Ports = append(snap.Ports, ps)
	}
	for _, id := range slices.Sorted(maps.Keys(inUse)) {
		if !seen[id] {
			rep.Missing = append(rep.Missing, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(cooling)) {
		if _, both := inUse[id]; !both && !seen[id] {
			rep.Missing = append(rep.Missing, id)
		}
	}
	slices.Sort(rep.Missing)
	if err := d.e.Restore(snap); err != nil {
		return RecoverReport{}, fmt.Errorf("load the pools of node %s: %w", d.node, err)
	}
	d.ready.Store(true)
	d.kick()
	select { // delete what is to be deleted without waiting a period
	case d.tickC <- nil:
	default:
	}
	if len(rep.Detached) > 0 {
		log.Info("Ports in use are not attached to the node's trunk", "ports", rep.Detached)
	}
	log.Info("PORTS POOL: pools loaded", "node", d.node, "listed", rep.Listed, "free", rep.Free, "inUse", rep.InUse,
		"cooling", rep.Cooling, "deleting", rep.Deleting, "missing", len(rep.Missing), "pools", len(d.e.Keys()))
	return rep, nil
}
