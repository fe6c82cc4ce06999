package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/internal/crashpoint"
)

// Run carries out the engine's plans until ctx is done: a Tick every UpdateFrequency (recycle
// cooled ports, delete the surplus, top pools up to Min), refills planned as soon as Acquire,
// Release or EnsurePool kick it (no polling), noop deletions at once, and the MarkInUse queue.
// Neutron calls get ctx: on return every call has finished or been cancelled and reported to the
// engine. Nothing is done before Recover. Run must not be called twice at once.
func (d *Driver) Run(ctx context.Context) {
	log := klog.FromContext(ctx).WithValues("poolNode", d.node)
	ctx = klog.NewContext(ctx, log)
	if !d.running.CompareAndSwap(false, true) {
		log.Error(nil, "pool driver already running; second Run ignored")
		return
	}
	defer d.running.Store(false)

	// Deletions outlive ctx by the shutdown grace: a port handed over for deletion is deleted, not
	// left behind, when the agent stops.
	delCtx, cancelDel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDel()
	r := &runner{d: d, ctx: ctx, delCtx: delCtx, cancelDel: cancelDel}
	for range markWorkers {
		r.wg.Go(func() { d.markLoop(ctx) })
	}
	ticker := time.NewTicker(d.freq)
	defer ticker.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()

	r.tick()
	for {
		r.arm(retry)
		select {
		case <-ctx.Done():
			r.stop()
			return
		case <-ticker.C:
			r.tick()
			r.resync()
		case done := <-d.tickC:
			r.tick()
			if done != nil {
				close(done)
			}
		case <-d.kickC:
			if d.ready.Load() {
				r.refills(d.e.PlanRefills())
			}
		case <-retry.C:
			r.refills(nil)
		case p := <-d.deleteC:
			batch := []Port{p}
		drain:
			for len(batch) < deleteQueue {
				select {
				case p := <-d.deleteC:
					batch = append(batch, p)
				default:
					break drain
				}
			}
			r.delete(batch)
		}
	}
}

// runner is the state of one Run: the goroutines it started and the refills held back by backoff.
type runner struct {
	d   *Driver
	ctx context.Context
	// delCtx is the deletions' context: cancelled a shutdown grace after ctx.
	delCtx    context.Context
	cancelDel context.CancelFunc
	wg        sync.WaitGroup
	// parked are refill tickets of keys whose last refills failed, waiting for their retry time.
	// They stay in flight in the engine, so that nothing plans the same ports again meanwhile.
	parked []Refill
	ticks  int // periodic ticks, for resync
}

func (r *runner) tick() {
	if !r.d.ready.Load() {
		return
	}
	plan := r.d.e.Tick()
	if len(plan.Delete) > 0 {
		r.delete(plan.Delete)
	}
	for _, p := range plan.Recycle {
		r.wg.Go(func() { r.d.recycle(r.ctx, p) })
	}
	r.refills(plan.Refills)
}

// refills starts the tickets planned and every parked one whose key may be retried now; the
// others are parked.
func (r *runner) refills(planned []Refill) {
	r.parked = append(r.parked, planned...)
	now := r.d.clock.Now()
	kept := r.parked[:0]
	for _, t := range r.parked {
		if at := r.d.retryAt(t.Key); now.Before(at) {
			kept = append(kept, t)
			continue
		}
		r.wg.Go(func() { _, _ = r.d.runRefill(r.ctx, t) })
	}
	r.parked = kept
}

// arm sets the retry timer for the earliest parked ticket.
func (r *runner) arm(t *time.Timer) {
	if len(r.parked) == 0 {
		t.Stop()
		return
	}
	var first time.Time
	for i, p := range r.parked {
		if at := r.d.retryAt(p.Key); i == 0 || at.Before(first) {
			first = at
		}
	}
	t.Reset(max(first.Sub(r.d.clock.Now()), minTimerWait))
}

func (r *runner) delete(ports []Port) {
	r.wg.Go(func() {
		select {
		case r.d.ioSem <- struct{}{}:
		case <-r.delCtx.Done():
			for _, p := range ports {
				r.d.e.DeleteFailed(p.ID)
			}
			return
		}
		defer func() { <-r.d.ioSem }()
		if _, err := r.d.deletePorts(r.delCtx, ports); err != nil && r.delCtx.Err() == nil {
			klog.FromContext(r.ctx).Error(err, "deleting pool ports failed; the next tick retries")
		}
		r.d.kick() // room under Max again
	})
}

// stop gives back what the engine still counts on this Run for, finishes the deletions queued and
// in flight within the shutdown grace, and waits for the goroutines.
func (r *runner) stop() {
	for _, t := range r.parked {
		r.d.e.RefillDone(t.ID, nil, r.ctx.Err())
	}
	r.parked = nil
	var queued []Port
	for drained := false; !drained; {
		select {
		case p := <-r.d.deleteC:
			queued = append(queued, p)
		default:
			drained = true
		}
	}
	var graceOver <-chan time.Time // nil without a grace: the deletions are cancelled at once
	if r.d.shutdownGrace > 0 {
		t := time.NewTimer(r.d.shutdownGrace)
		defer t.Stop()
		graceOver = t.C
	} else {
		r.cancelDel()
	}
	if len(queued) > 0 {
		r.delete(queued) // once cancelled, they are given back as failed: the next start deletes them
	}
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-graceOver:
		klog.FromContext(r.ctx).Info("shutdown grace over: pending port deletions cancelled; the next start deletes them", "grace", r.d.shutdownGrace)
		r.cancelDel()
		<-done
	}
}

func (d *Driver) retryAt(key Key) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.pools[key]; p != nil {
		return p.retryAt
	}
	return time.Time{}
}

// refillResult records how a refill of key went: a failure is the key's reason for waiting requests
// and delays its next refill, exponentially up to UpdateFrequency.
func (d *Driver) refillResult(key Key, err error) {
	if err != nil && d.onRefillError != nil {
		d.onRefillError(key, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.poolLocked(key)
	if err == nil {
		p.lastErr, p.failures, p.retryAt = "", 0, time.Time{}
		return
	}
	p.lastErr = err.Error()
	p.failures++
	delay := d.base << min(p.failures-1, 20)
	if delay <= 0 || delay > d.freq {
		delay = d.freq
	}
	p.retryAt = d.clock.Now().Add(delay)
}

// runRefill creates the ports of one ticket and reports them to the engine, which wakes the key's
// waiters either way.
func (d *Driver) runRefill(ctx context.Context, t Refill) (int, error) {
	select {
	case d.createSem <- struct{}{}:
	case <-ctx.Done():
		d.e.RefillDone(t.ID, nil, ctx.Err())
		return 0, fmt.Errorf("create %d ports of pool %s: %w", t.Count, t.Key, ctx.Err())
	}
	defer func() { <-d.createSem }()
	defer d.mutating()()
	log := klog.FromContext(ctx).WithValues("pool", t.Key.String(), "count", t.Count, "ticket", t.ID)

	subnets := d.subnets(t.Key)
	if len(subnets) == 0 {
		err := fmt.Errorf("create ports of pool %s: no subnets known for it (no EnsurePool or request named them)", t.Key)
		d.refillResult(t.Key, err) // before RefillDone: woken waiters read the reason
		d.e.RefillDone(t.ID, nil, err)
		log.V(2).Info("pool not refilled", "err", err)
		return 0, err
	}
	ports, err := d.b.CreatePorts(ctx, CreateRequest{Key: t.Key, SubnetIDs: subnets, SGs: t.SGs, Count: t.Count})
	if err != nil {
		d.n.createFail.Add(1)
		if ctx.Err() == nil {
			d.refillResult(t.Key, err)
			log.Error(err, "pool refill failed")
		}
		// The backend is all or nothing; should it still return ports, they are kept, not leaked.
		d.n.created.Add(int64(len(ports)))
		d.e.RefillDone(t.ID, ports, err)
		return len(ports), err
	}
	crashpoint.Hit("refill-created")
	d.n.created.Add(int64(len(ports)))
	d.refillResult(t.Key, nil)
	d.e.RefillDone(t.ID, ports, nil)
	log.V(4).Info("pool refilled", "created", len(ports))
	d.kick() // a short batch, or more waiters than it served
	return len(ports), nil
}

// recycle gives a cooled port its pool identity back.
func (d *Driver) recycle(ctx context.Context, p Port) {
	// A rename still in flight lands first; waiting for it holds no I/O slot.
	if err := d.waitMarks(ctx, p.ID); err != nil {
		d.e.RecycleFailed(p.ID)
		return
	}
	select {
	case d.ioSem <- struct{}{}:
	case <-ctx.Done():
		d.e.RecycleFailed(p.ID)
		return
	}
	defer func() { <-d.ioSem }()
	if err := d.b.ResetPort(ctx, p); err != nil {
		if errors.Is(err, ErrPortGone) {
			klog.FromContext(ctx).Info("a port being recycled was deleted outside the agent; forgotten", "port", p.ID)
			d.e.RecycleGone(p.ID)
			return
		}
		d.n.recycleFail.Add(1)
		d.e.RecycleFailed(p.ID)
		if ctx.Err() == nil {
			klog.FromContext(ctx).Error(err, "recycling a pool port failed; the next tick retries", "port", p.ID)
		}
		return
	}
	crashpoint.Hit("recycle-reset")
	d.n.recycled.Add(1)
	d.e.Recycled(p.ID)
}

// deletePorts deletes ports the engine marked deleting and reports each one. They are renamed
// DeletingPortName first: a DELETE still in flight when the agent dies may complete after the next
// agent has loaded the port, and that one must not hand it out (Recover loads such ports as
// deleting). A failed rename does not stop the deletion: that race needs a crash as well.
func (d *Driver) deletePorts(ctx context.Context, ports []Port) (int, error) {
	defer d.mutating()()
	var wg sync.WaitGroup
	for _, p := range ports {
		wg.Go(func() {
			if err := d.b.MarkInUse(ctx, p, DeletingPortName, ""); err != nil {
				klog.FromContext(ctx).V(2).Info("renaming a port before its deletion failed; deleting it anyway", "port", p.ID, "err", err)
			}
		})
	}
	wg.Wait()
	failed := d.b.DeletePorts(ctx, ports)
	crashpoint.Hit("delete-done")
	var errs []error
	deleted := 0
	for _, p := range ports {
		if err, bad := failed[p.ID]; bad {
			d.e.DeleteFailed(p.ID)
			errs = append(errs, fmt.Errorf("delete port %s: %w", p.ID, err))
			continue
		}
		d.e.Deleted(p.ID)
		deleted++
	}
	d.n.deleted.Add(int64(deleted))
	d.n.deleteFail.Add(int64(len(ports) - deleted))
	return deleted, errors.Join(errs...)
}

func (d *Driver) markLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-d.markC:
			d.mark(ctx, j)
		}
	}
}

// mark runs one MarkInUse with retries. Each attempt starts only while the port is still in use by
// the job's owner, and a recycle waits for an attempt in flight: a late retry never stamps a pod on a
// port already recycled, or on the next pod's.
func (d *Driver) mark(ctx context.Context, j markJob) {
	log := klog.FromContext(ctx).WithValues("port", j.p.ID, "pod", j.name)
	delay := d.markBase
	for attempt := 1; ; attempt++ {
		done, ok := d.startMark(j)
		if !ok {
			return
		}
		err := d.b.MarkInUse(ctx, j.p, j.name, j.deviceID)
		d.endMark(j.p.ID, done)
		if err == nil {
			crashpoint.Hit("mark-updated")
			return
		}
		if ctx.Err() != nil {
			return
		}
		if attempt == markAttempts {
			d.n.markFail.Add(1)
			log.Error(err, "marking a port in use failed; giving up", "attempts", attempt)
			return
		}
		log.V(2).Info("marking a port in use failed; retrying", "err", err, "attempt", attempt, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// startMark registers a mark attempt of j's port if the port is still in use by j's owner. The check
// and the registration are one step under d.mu, and the port leaves in-use before its recycle
// looks (waitMarks): either the recycle sees the attempt and waits, or the attempt sees the port
// released and does not start.
func (d *Driver) startMark(j markJob) (chan struct{}, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.e.InUseBy(j.p.ID) != j.owner {
		return nil, false
	}
	done := make(chan struct{})
	d.marking[j.p.ID] = done
	return done, true
}

func (d *Driver) endMark(portID string, done chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.marking[portID] == done {
		delete(d.marking, portID)
	}
	close(done)
}

// waitMarks waits for a mark attempt of the port in flight, if any.
func (d *Driver) waitMarks(ctx context.Context, portID string) error {
	d.mu.Lock()
	done := d.marking[portID]
	d.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Populate is the management API's populate: n ports of key created now (in tickets of at most
// Batch, at most MaxConcurrentRefills at once), ignoring any refill backoff. Without force it never
// goes past a non-zero Max and capped says how many of the n it refused. It returns when every
// ticket is done; when ctx ends first, ports already created stay in the pool and creations cut
// short leave nothing behind (the Backend is all or nothing).
func (d *Driver) Populate(ctx context.Context, key Key, n int, force bool) (created int, capped int, err error) {
	switch {
	case d.noop:
		return 0, 0, fmt.Errorf("populate pool %s: %w", key, ErrNoPools)
	case !d.Ready():
		return 0, 0, fmt.Errorf("populate pool %s: %w", key, ErrNotReady)
	}
	d.mu.Lock()
	var subnets []string
	var sgs SGSet
	if p := d.pools[key]; p != nil {
		subnets, sgs = p.subnets, p.sgs
	}
	d.mu.Unlock()
	if len(subnets) == 0 {
		return 0, 0, fmt.Errorf("populate pool %s: no subnets known for it (no EnsurePool or request named them)", key)
	}
	tickets, capped := d.e.Populate(key, sgs, n, force)
	created, err = d.runTickets(ctx, tickets)
	return created, capped, err
}

// runTickets creates the ports of tickets, concurrently, and returns when every one is done.
func (d *Driver) runTickets(ctx context.Context, tickets []Refill) (created int, err error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, t := range tickets {
		wg.Go(func() {
			c, err := d.runRefill(ctx, t)
			mu.Lock()
			defer mu.Unlock()
			created += c
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return created, errors.Join(errs...)
}

// PopulateEmpty fills key with n ports on subnetIDs with sgs, but only when the pool holds no port
// at all (Engine.PopulateEmpty): the agents' pre-population of a new namespace subnet, which a
// restarted agent whose pool already has ports must not repeat. It returns how many it created (0
// for a pool that was not empty) once they are created. The noop driver keeps no pools: 0, nil.
func (d *Driver) PopulateEmpty(ctx context.Context, key Key, subnetIDs []string, sgs SGSet, n int) (int, error) {
	switch {
	case d.noop:
		return 0, nil
	case !d.Ready():
		return 0, fmt.Errorf("populate pool %s: %w", key, ErrNotReady)
	case len(subnetIDs) == 0:
		return 0, fmt.Errorf("populate pool %s: no subnet given", key)
	}
	d.learn(key, subnetIDs, sgs)
	created, err := d.runTickets(ctx, d.e.PopulateEmpty(key, sgs, n))
	if err != nil {
		err = fmt.Errorf("populate pool %s: %w", key, err)
	}
	return created, err
}

// Retire is for the pool of a network that is going away (its namespace was deleted): no more
// refills, its free ports are deleted now (subports detached first), and the ports still in use
// are deleted when their pods release them (Engine.Retire).
func (d *Driver) Retire(ctx context.Context, key Key) (deleted int, err error) {
	ports := d.e.Retire(key)
	if len(ports) > 0 {
		if deleted, err = d.deletePorts(ctx, ports); err != nil {
			err = fmt.Errorf("retire pool %s: %w", key, err)
		}
	}
	return deleted, err
}

// Free is the management API's free: every free port of key is deleted now (subports detached first
// by the backend); in-use, cooling and recycling ports are untouched. Ports it could not delete are
// retried by the next tick.
func (d *Driver) Free(ctx context.Context, key Key) (deleted int, err error) {
	if !d.Ready() {
		return 0, fmt.Errorf("free pool %s: %w", key, ErrNotReady)
	}
	ports := d.e.Free(key)
	if len(ports) == 0 {
		return 0, nil
	}
	deleted, err = d.deletePorts(ctx, ports)
	if err != nil {
		err = fmt.Errorf("free pool %s: %w", key, err)
	}
	return deleted, err
}
