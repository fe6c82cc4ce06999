package pool

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"k8s.io/klog/v2"
)

// resyncTicks is how many periodic ticks of Run pass between two Resyncs.
const resyncTicks = 10

// mutationGuard tells Resync whether this driver created or deleted ports while it listed them.
type mutationGuard struct {
	mu  sync.RWMutex // read-held by every creation and deletion, from its request to its report
	gen atomic.Int64 // creations and deletions started
}

// mutating marks a creation or deletion of ports, until the returned func is called (after the
// engine has its outcome).
func (d *Driver) mutating() (done func()) {
	d.mut.mu.RLock()
	d.mut.gen.Add(1)
	return d.mut.mu.RUnlock
}

// Resync adopts, as free, the ports of this node that Neutron has and the engine does not know. A
// bulk create still in flight when an earlier agent was killed completes after this agent's Recover
// listed the node's ports; without Resync those ports would be leaked until the next restart. It
// lists with ListPorts (a constant number of requests) and gives up, for the next time, when this
// driver was creating or deleting ports meanwhile: an unknown port could then be one a refill is
// about to report, or one just deleted. It returns how many ports it adopted.
func (d *Driver) Resync(ctx context.Context) (int, error) {
	if d.noop || !d.Ready() || !d.mut.mu.TryLock() {
		return 0, nil
	}
	gen := d.mut.gen.Load()
	d.mut.mu.Unlock()
	listed, err := d.b.ListPorts(ctx)
	if err != nil {
		return 0, fmt.Errorf("resync the pools of node %s: %w", d.node, err)
	}
	if !d.mut.mu.TryLock() {
		return 0, nil
	}
	defer d.mut.mu.Unlock()
	if d.mut.gen.Load() != gen {
		return 0, nil
	}
	var unknown []Port
	for _, lp := range listed {
		if _, _, known := d.e.Get(lp.ID); !known && lp.Attached && lp.Name == AvailablePortName {
			unknown = append(unknown, lp.Port)
		}
	}
	adopted := 0
	for _, added := range d.e.AddFree(unknown...) {
		if added {
			adopted++
		}
	}
	if adopted > 0 {
		klog.FromContext(ctx).Info("PORTS POOL: adopted ports Neutron has and the pools did not know", "node", d.node, "ports", adopted)
		d.kick()
	}
	return adopted, nil
}

// resync runs Resync every resyncTicks periodic ticks, in the background.
func (r *runner) resync() {
	if r.ticks++; r.ticks%resyncTicks != 0 {
		return
	}
	r.wg.Go(func() {
		if _, err := r.d.Resync(r.ctx); err != nil && r.ctx.Err() == nil {
			klog.FromContext(r.ctx).Error(err, "resync with Neutron failed; the next one retries")
		}
	})
}
