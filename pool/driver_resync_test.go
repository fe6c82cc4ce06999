package pool

import (
	"testing"
)

// TestDriverResync: ports Neutron shows after Recover (the bulk create of a killed agent completing
// late) are adopted as free, but not while this driver creates ports (a port of its own refill is
// not the engine's yet), and never one being deleted.
func TestDriverResync(t *testing.T) {
	f := newFakeBackend()
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1}})
	dt.recover(nil, nil)
	f.seed("late", drvKey, drvSGa, true)
	f.seed("dying", drvKey, drvSGa, true)
	f.view(func(f *fakeBackend) {
		lp := f.ports["dying"]
		lp.Name = DeletingPortName
		f.ports["dying"] = lp
	})
	if n, err := dt.d.Resync(dt.ctx); err != nil || n != 1 {
		t.Fatalf("Resync = %d, %v; want 1 adopted", n, err)
	}
	if st, st2 := dt.state("late"), dt.state("dying"); st != StateFree || st2 != "" {
		t.Errorf("after Resync late is %q and dying %q, want free and unknown", st, st2)
	}
	if n, err := dt.d.Resync(dt.ctx); err != nil || n != 0 {
		t.Errorf("second Resync = %d, %v; want 0", n, err)
	}

	// A creation in flight: the listing may show its ports before the engine has them.
	gate := make(chan struct{})
	f.view(func(f *fakeBackend) { f.createGate = gate })
	dt.d.EnsurePool(drvKey, drvSubs, drvSGa)
	done := make(chan error, 1)
	go func() {
		_, _, err := dt.d.Populate(dt.ctx, drvKey, 1, true)
		done <- err
	}()
	waitFor(t, "the creation started", func() bool {
		n := 0
		f.view(func(f *fakeBackend) { n = len(f.creates) })
		return n == 1
	})
	f.seed("late-2", drvKey, drvSGa, true)
	if n, err := dt.d.Resync(dt.ctx); err != nil || n != 0 {
		t.Errorf("Resync with a creation in flight = %d, %v; want 0", n, err)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, err := dt.d.Resync(dt.ctx); err != nil || n != 1 || dt.state("late-2") != StateFree {
		t.Errorf("Resync after the creation = %d, %v (late-2 %q); want late-2 adopted", n, err, dt.state("late-2"))
	}
}
