package pool

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	fuzzKeys   = []Key{keyA, keyB, {Node: "node-2", Project: "other", Network: "net-a"}}
	fuzzSGs    = []SGSet{"", NewSGSet("sg-a"), NewSGSet("sg-a", "sg-b")}
	fuzzOwners = []string{"c0/eth0", "c1/eth0", "c2/eth0", "c3/eth0", "c3/eth1"}
)

const (
	fuzzUnit = 10 * time.Second
	// fuzzMaxInput bounds what FuzzEngine reads of an input (a few dozen operations reach every
	// path of the engine): go's minimizer is quadratic in the input length, and with longer
	// inputs a 60 s run spends its time minimizing instead of fuzzing. Long sequences are
	// TestEngineRandomSequences' job.
	fuzzMaxInput = 128
	fuzzMaxSteps = 300
	fuzzMaxPorts = 120 // port creation stops (refills fail) beyond this many known ports
)

// fuzzPending is a driver call in flight; gen is the Restore generation it was planned in.
type fuzzPending struct {
	id  string
	gen int
}

// fuzzStep is one traced operation, formatted only when a check fails.
type fuzzStep struct {
	format string
	args   []any
}

// engineFuzz drives an engine with operations decoded from fuzz bytes, plays the driver for its
// plans, and keeps a model of who holds which port to check the engine against.
type engineFuzz struct {
	e     *Engine
	clk   *engClock
	in    []byte
	trace []fuzzStep

	refills          []Refill
	recycle, deletes []fuzzPending
	gen              int // Restore generation

	holder  map[string]string // port ID -> owner, as the model saw the grants
	held    map[string]string // owner -> port ID
	states  map[string]State  // every port's state after the previous step
	keyOf   map[string]Key
	nextNew int
	retired map[Key]bool // keys retired since their last EnsurePool/Populate (Restore forgets)
}

func (f *engineFuzz) next() int {
	if len(f.in) == 0 {
		return 0
	}
	b := f.in[0]
	f.in = f.in[1:]
	return int(b)
}

func (f *engineFuzz) pick(n int) int { return f.next() % n }

func (f *engineFuzz) limits() Limits {
	return Limits{
		Min:         f.pick(5),
		Max:         f.pick(9),
		Batch:       f.pick(5), // 0 is normalised to 1
		Cooldown:    time.Duration(f.pick(4)) * fuzzUnit,
		IdleTimeout: time.Duration(f.pick(4)) * 2 * fuzzUnit,
	}
}

func (f *engineFuzz) newPort(k Key, sgs SGSet) Port {
	f.nextNew++
	return mkPort(fmt.Sprintf("p%d", f.nextNew), k, sgs)
}

// somePort picks a port ID: a held one, a known one, or an unknown one.
func (f *engineFuzz) somePort() string {
	switch f.pick(3) {
	case 0:
		if id, ok := f.held[fuzzOwners[f.pick(len(fuzzOwners))]]; ok {
			return id
		}
	case 1:
		if f.nextNew > 0 {
			return fmt.Sprintf("p%d", 1+f.pick(f.nextNew))
		}
	}
	return "unknown"
}

func (f *engineFuzz) tracef(format string, args ...any) {
	f.trace = append(f.trace, fuzzStep{format, args})
}

func (f *engineFuzz) fail(format string, args ...any) error {
	var tail []string
	for _, st := range f.trace[max(len(f.trace)-60, 0):] {
		tail = append(tail, fmt.Sprintf(st.format, st.args...))
	}
	return fmt.Errorf("%s\nlast steps:\n  %s", fmt.Sprintf(format, args...), strings.Join(tail, "\n  "))
}

func (f *engineFuzz) freeCount(k Key) int {
	n := 0
	for id, st := range f.states {
		if st == StateFree && f.keyOf[id] == k {
			n++
		}
	}
	return n
}

// step runs one operation and checks what it returned against the model.
func (f *engineFuzz) step() error {
	e := f.e
	switch op := f.pick(20); op {
	case 0: // ports loaded or created elsewhere, plus sometimes one already known
		if len(f.states) >= fuzzMaxPorts {
			return nil
		}
		k, sgs := fuzzKeys[f.pick(len(fuzzKeys))], fuzzSGs[f.pick(len(fuzzSGs))]
		ports := make([]Port, 1+f.pick(3))
		for i := range ports {
			ports[i] = f.newPort(k, sgs)
		}
		known := f.pick(4) == 0 && f.nextNew > len(ports)
		if known {
			ports = append(ports, mkPort(fmt.Sprintf("p%d", 1+f.pick(f.nextNew-len(ports))), k, sgs))
		}
		f.tracef("AddFree(%s %q %d ports, known %v)", k, sgs, len(ports), known)
		added := e.AddFree(ports...)
		for i, a := range added {
			if _, was := f.states[ports[i].ID]; a == was {
				return f.fail("AddFree reported %v for %s, known before: %v", a, ports[i].ID, was)
			}
		}

	case 1:
		k, sgs, owner := fuzzKeys[f.pick(len(fuzzKeys))], fuzzSGs[f.pick(len(fuzzSGs))], fuzzOwners[f.pick(len(fuzzOwners))]
		f.tracef("Acquire(%s %q %s)", k, sgs, owner)
		g, err := e.Acquire(k, sgs, owner)
		had, holds := f.held[owner]
		switch {
		case err == nil:
			if g.Port.Key != k || g.RewriteSGs != (g.Port.SGs != sgs) {
				return f.fail("grant %+v for %s %q", g, k, sgs)
			}
			if holds {
				if g.Port.ID != had {
					return f.fail("repeated Acquire by %s gave %s, it holds %s", owner, g.Port.ID, had)
				}
				break
			}
			if other, ok := f.holder[g.Port.ID]; ok {
				return f.fail("port %s handed to %s while %s holds it", g.Port.ID, owner, other)
			}
			if f.states[g.Port.ID] != StateFree {
				return f.fail("port %s handed out from state %q", g.Port.ID, f.states[g.Port.ID])
			}
			f.holder[g.Port.ID], f.held[owner] = owner, g.Port.ID
		case errors.Is(err, ErrEmpty):
			var empty *EmptyError
			if holds || !errors.As(err, &empty) || empty.Key != k || f.freeCount(k) != 0 {
				return f.fail("Acquire: %v, but owner holds %q and the key had %d free ports", err, had, f.freeCount(k))
			}
		case errors.Is(err, ErrConflict):
			if !holds || f.keyOf[had] == k {
				return f.fail("Acquire: %v, but owner holds %q", err, had)
			}
		default:
			return f.fail("Acquire: %v", err)
		}

	case 2:
		id := f.somePort()
		f.tracef("Abort(%s)", id)
		err := e.Abort(id)
		if (err == nil) != (f.states[id] == StateInUse) {
			return f.fail("Abort of a %q port: %v", f.states[id], err)
		}
		if err == nil {
			delete(f.held, f.holder[id])
			delete(f.holder, id)
		}

	case 3:
		id, sgs := f.somePort(), fuzzSGs[f.pick(len(fuzzSGs))]
		f.tracef("SetSGs(%s %q)", id, sgs)
		err := e.SetSGs(id, sgs)
		st := f.states[id]
		if (err == nil) != (st == StateInUse || st == StateCooling || st == StateRecycling) {
			return f.fail("SetSGs of a %q port: %v", st, err)
		}

	case 4:
		owner := fuzzOwners[f.pick(len(fuzzOwners))]
		f.tracef("Release(%s)", owner)
		p, err := e.Release(owner)
		id, holds := f.held[owner]
		if holds != (err == nil) || holds && p.ID != id || !holds && !errors.Is(err, ErrUnknownOwner) {
			return f.fail("Release: %s %v, model says owner holds %q", p.ID, err, id)
		}
		delete(f.held, owner)
		delete(f.holder, id)

	case 5:
		d := time.Duration(f.pick(4)) * fuzzUnit
		f.clk.Advance(d)
		f.tracef("Tick(+%s)", d)
		plan := e.Tick()
		lim := e.Limits()
		for _, k := range e.Keys() {
			if st := e.Stats(k); lim.Max > 0 && st.Free > lim.Max {
				return f.fail("after Tick pool %s has %d free ports, max %d", k, st.Free, lim.Max)
			} else if f.retired[k] && st.Free+st.Cooling > 0 {
				return f.fail("after Tick retired pool %s keeps ports: %+v", k, st)
			}
		}
		if err := f.planned(plan.Recycle, StateRecycling, &f.recycle); err != nil {
			return err
		}
		if err := f.planned(plan.Delete, StateDeleting, &f.deletes); err != nil {
			return err
		}
		return f.refilled(plan.Refills, false)

	case 6:
		if len(f.refills) == 0 {
			return nil
		}
		i := f.pick(len(f.refills))
		r := f.refills[i]
		f.refills = append(f.refills[:i], f.refills[i+1:]...)
		var created []Port
		var err error
		switch mode := f.pick(3); {
		case mode == 0 || len(f.states) >= fuzzMaxPorts:
			err = errors.New("quota exceeded")
		case mode == 1: // fewer than asked, without key: the engine fills in the ticket's
			created = append(created, f.newPort(Key{}, r.SGs))
		default:
			for range r.Count {
				created = append(created, f.newPort(r.Key, r.SGs))
			}
		}
		f.tracef("RefillDone(%d: %d of %d, %v)", r.ID, len(created), r.Count, err)
		e.RefillDone(r.ID, created, err)

	case 7, 8:
		list := &f.recycle
		if op == 8 {
			list = &f.deletes
		}
		if len(*list) == 0 {
			return nil
		}
		i := f.pick(len(*list))
		id, gen := (*list)[i].id, (*list)[i].gen
		*list = append((*list)[:i], (*list)[i+1:]...)
		if gen != f.gen {
			// A report of a call planned before a Restore: the engine takes it for the current
			// call's, so the current call of the port is no longer the only one in flight.
			for _, q := range [][]fuzzPending{f.recycle, f.deletes} {
				for j := range q {
					if q[j].id == id {
						q[j].gen = -1
					}
				}
			}
		}
		ok := f.pick(3) != 0
		f.tracef("report(op %d, %s, ok %v)", op, id, ok)
		switch {
		case op == 7 && ok && f.pick(4) == 0: // deleted behind the agent's back
			e.RecycleGone(id)
		case op == 7 && ok:
			e.Recycled(id)
		case op == 7:
			e.RecycleFailed(id)
		case ok:
			e.Deleted(id)
		default:
			e.DeleteFailed(id)
		}

	case 9:
		k, sgs, n, force := fuzzKeys[f.pick(len(fuzzKeys))], fuzzSGs[f.pick(len(fuzzSGs))], f.pick(13), f.pick(2) == 0
		f.tracef("Populate(%s %q %d force %v)", k, sgs, n, force)
		tickets, capped := e.Populate(k, sgs, n, force)
		delete(f.retired, k)
		sum := 0
		for _, r := range tickets {
			sum += r.Count
			if !r.Forced || r.Key != k || r.SGs != sgs {
				return f.fail("populate ticket %+v", r)
			}
		}
		if sum+capped != n || force && capped != 0 {
			return f.fail("Populate %d: tickets for %d, capped %d", n, sum, capped)
		}
		return f.refilled(tickets, true)

	case 10:
		k := fuzzKeys[f.pick(len(fuzzKeys))]
		f.tracef("Free(%s)", k)
		ports := e.Free(k)
		if len(ports) != f.freeCount(k) {
			return f.fail("Free returned %d ports, %d were free", len(ports), f.freeCount(k))
		}
		return f.planned(ports, StateDeleting, &f.deletes)

	case 11:
		k, owner := fuzzKeys[f.pick(len(fuzzKeys))], fuzzOwners[f.pick(len(fuzzOwners))]
		f.tracef("CancelWait(%s %s)", k, owner)
		e.CancelWait(k, owner)

	case 12:
		fresh := f.pick(2) == 0
		f.tracef("Snapshot+Restore(fresh engine %v)", fresh)
		b1, err := json.Marshal(e.Snapshot())
		if err != nil {
			return f.fail("marshal: %v", err)
		}
		var s Snapshot
		if err := json.Unmarshal(b1, &s); err != nil {
			return f.fail("unmarshal: %v", err)
		}
		if fresh {
			f.e = NewEngine(e.Limits(), f.clk)
		}
		if err := f.e.Restore(s); err != nil {
			return f.fail("Restore of a valid snapshot: %v", err)
		}
		if b2, _ := json.Marshal(f.e.Snapshot()); string(b2) != string(b1) {
			return f.fail("Snapshot/Restore round trip:\n%s\n%s", b1, b2)
		}
		if len(s.Ports) > 0 { // an invalid snapshot must be refused and change nothing
			s.Ports = append(s.Ports, s.Ports[f.pick(len(s.Ports))])
			if err := f.e.Restore(s); err == nil || !strings.Contains(err.Error(), "listed twice") {
				return f.fail("Restore of a snapshot with a duplicate port: %v", err)
			}
			if b3, _ := json.Marshal(f.e.Snapshot()); string(b3) != string(b1) {
				return f.fail("a refused Restore changed the state")
			}
		}
		f.gen++
		clear(f.retired)
		// Tickets planned before are unknown now; their reports still come and must be harmless.

	case 13:
		l := f.limits()
		f.tracef("SetLimits(%+v)", l)
		e.SetLimits(l)

	case 14:
		f.tracef("PlanRefills")
		return f.refilled(e.PlanRefills(), false)

	case 15:
		k, sgs := fuzzKeys[f.pick(len(fuzzKeys))], fuzzSGs[f.pick(len(fuzzSGs))]
		f.tracef("EnsurePool(%s %q)", k, sgs)
		e.EnsurePool(k, sgs)
		delete(f.retired, k)

	case 17: // the noop driver's DEL: in use straight to deleting
		id := f.somePort()
		f.tracef("Discard(%s)", id)
		p, err := e.Discard(id)
		if (err == nil) != (f.states[id] == StateInUse) {
			return f.fail("Discard of a %q port: %v", f.states[id], err)
		}
		if err == nil {
			delete(f.held, f.holder[id])
			delete(f.holder, id)
			return f.planned([]Port{p}, StateDeleting, &f.deletes)
		}

	case 18: // the namespace of a pool's network is deleted
		k := fuzzKeys[f.pick(len(fuzzKeys))]
		f.tracef("Retire(%s)", k)
		free := f.freeCount(k)
		ports := e.Retire(k)
		if len(ports) != free {
			return f.fail("Retire returned %d ports, %d were free", len(ports), free)
		}
		if slices.Contains(e.Keys(), k) { // an unknown or emptied key is forgotten at once
			f.retired[k] = true
		}
		if err := f.planned(ports, StateDeleting, &f.deletes); err != nil {
			return err
		}
		if refills := e.PlanRefills(); slices.ContainsFunc(refills, func(r Refill) bool { return r.Key == k }) {
			return f.fail("PlanRefills right after Retire(%s): %+v", k, refills)
		}
		return f.refilled(e.PlanRefills(), false)

	case 19: // pre-population of a new namespace subnet
		k, sgs, n := fuzzKeys[f.pick(len(fuzzKeys))], fuzzSGs[f.pick(len(fuzzSGs))], f.pick(13)
		st := e.Stats(k)
		f.tracef("PopulateEmpty(%s %q %d) on %+v", k, sgs, n, st)
		tickets := e.PopulateEmpty(k, sgs, n)
		sum := 0
		for _, r := range tickets {
			sum += r.Count
		}
		empty := st == (Stats{})
		lim := e.Limits()
		want := 0
		if empty {
			want = n
			if lim.Max > 0 {
				want = min(n, lim.Max)
			}
			delete(f.retired, k)
		}
		if sum != want {
			return f.fail("PopulateEmpty(%d) on %+v planned %d, want %d", n, st, sum, want)
		}
		return f.refilled(tickets, true)

	case 16: // a port restored from the checkpoint, new or known
		owner := fuzzOwners[f.pick(len(fuzzOwners))]
		var p Port
		if f.pick(2) == 0 && f.nextNew > 0 {
			id := fmt.Sprintf("p%d", 1+f.pick(f.nextNew))
			p = mkPort(id, f.keyOf[id], "")
		} else {
			p = f.newPort(fuzzKeys[f.pick(len(fuzzKeys))], fuzzSGs[f.pick(len(fuzzSGs))])
		}
		f.tracef("AddInUse(%s %s)", p.ID, owner)
		err := e.AddInUse(p, owner)
		had, holds := f.held[owner]
		_, known := f.states[p.ID]
		same := holds && had == p.ID
		if wantOK := same || !holds && !known; (err == nil) != wantOK {
			return f.fail("AddInUse: %v; owner holds %q, port known %v", err, had, known)
		}
		if err == nil {
			f.holder[p.ID], f.held[owner] = owner, p.ID
		}
	}
	return nil
}

// planned checks ports a plan or Free marked and queues them for the driver. A port must not be
// planned while a call planned for it is in flight, unless a call from before a Restore is still
// around: the engine cannot tell that call's late failure report from the current one's.
func (f *engineFuzz) planned(ports []Port, st State, list *[]fuzzPending) error {
	for _, p := range ports {
		if _, got, ok := f.e.Get(p.ID); !ok || got != st {
			return f.fail("planned port %s is %q, want %s", p.ID, got, st)
		}
		current, stale := false, false
		for _, q := range append(f.recycle[:len(f.recycle):len(f.recycle)], f.deletes...) {
			if q.id == p.ID {
				current = current || q.gen == f.gen
				stale = stale || q.gen != f.gen
			}
		}
		if current && !stale {
			return f.fail("port %s planned while a driver call for it is in flight (recycle %v, delete %v, gen %d)", p.ID, f.recycle, f.deletes, f.gen)
		}
		*list = append(*list, fuzzPending{id: p.ID, gen: f.gen})
	}
	return nil
}

// refilled checks tickets and queues them; unforced ones must respect Batch and Max.
func (f *engineFuzz) refilled(tickets []Refill, forced bool) error {
	lim := f.e.Limits()
	for _, r := range tickets {
		if r.Count <= 0 || r.Count > lim.Batch || r.Forced != forced {
			return f.fail("ticket %+v with batch %d", r, lim.Batch)
		}
		if !forced && f.retired[r.Key] {
			return f.fail("refill %+v planned for a retired pool", r)
		}
		if st := f.e.Stats(r.Key); !forced && lim.Max > 0 && st.Free+st.Recycling+st.InFlight > lim.Max {
			return f.fail("refill of %s planned past max %d: %+v", r.Key, lim.Max, st)
		}
		f.refills = append(f.refills, r)
	}
	return nil
}

// observe checks the invariants and the model after a step, and records the states for the next.
func (f *engineFuzz) observe() error {
	s, err := checkEngineSnapshot(f.e)
	if err != nil {
		return f.fail("invariant: %v", err)
	}
	clear(f.states)
	inUse := 0
	for _, ps := range s.Ports {
		f.states[ps.Port.ID] = ps.State
		f.keyOf[ps.Port.ID] = ps.Port.Key
		if ps.State == StateInUse {
			inUse++
			if f.holder[ps.Port.ID] != ps.Owner {
				return f.fail("port %s held by %q, the model says %q", ps.Port.ID, ps.Owner, f.holder[ps.Port.ID])
			}
		}
	}
	if inUse != len(f.holder) {
		return f.fail("%d ports in use, the model has %d", inUse, len(f.holder))
	}
	// A retired key is forgotten once it holds no port; made again, it is a live pool.
	for k := range f.retired {
		if !slices.Contains(f.e.Keys(), k) {
			delete(f.retired, k)
		}
	}
	for owner, id := range f.held {
		if p, ok := f.e.Owner(owner); !ok || p.ID != id {
			return f.fail("Owner(%s) = %s %v, the model says %s", owner, p.ID, ok, id)
		}
	}
	return nil
}

func runEngineFuzz(data []byte) error {
	f := &engineFuzz{
		clk: newEngClock(), in: data,
		holder: map[string]string{}, held: map[string]string{},
		states: map[string]State{}, keyOf: map[string]Key{}, retired: map[Key]bool{},
	}
	f.e = NewEngine(f.limits(), f.clk)
	for steps := 0; len(f.in) > 0 && steps < fuzzMaxSteps; steps++ {
		if err := f.step(); err != nil {
			return err
		}
		if err := f.observe(); err != nil {
			return err
		}
	}
	return nil
}

func FuzzEngine(f *testing.F) {
	f.Add([]byte{})
	// Fill a pool, take ports with and without rewrite, release, tick, recycle, snapshot.
	f.Add([]byte{
		2, 6, 2, 1, 0, // limits: min 2, max 6, batch 2, cooldown 10s, idle 0
		0, 0, 1, 2, // AddFree keyA sg-a 3 ports
		1, 0, 1, 0, 1, 0, 2, 1, 1, 1, 0, 1, 2, // Acquires
		4, 0, 4, 1, 5, 1, 7, 0, 1, 7, 0, 1, 5, 2, 6, 0, 2, 6, 0, 1,
		12, 0, 9, 1, 1, 12, 0, 10, 0, 8, 0, 0, 14, 16, 1, 2,
	})
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		b := make([]byte, 32+rng.IntN(fuzzMaxInput-32))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		data = data[:min(len(data), fuzzMaxInput)]
		if err := runEngineFuzz(data); err != nil {
			t.Fatal(err)
		}
	})
}

// TestEngineRandomSequences runs the fuzz harness on many pseudo-random sequences in a plain
// `go test`, so the invariants are checked on every run, not only when someone fuzzes.
func TestEngineRandomSequences(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 7))
	n := 200
	if testing.Short() {
		n = 30
	}
	for i := range n {
		b := make([]byte, 100+rng.IntN(1000))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		if err := runEngineFuzz(b); err != nil {
			t.Fatalf("sequence %d: %v", i, err)
		}
	}
}
