package pool

import (
	"slices"
	"testing"
)

// TestDriverDeleteRenamesFirst: a port is renamed DeletingPortName before its DELETE, and Recover
// never hands out a port so named: the DELETE of an agent killed meanwhile may still complete.
func TestDriverDeleteRenamesFirst(t *testing.T) {
	f := newFakeBackend()
	f.seed("free-1", drvKey, drvSGa, true)
	f.seed("dying", drvKey, drvSGa, true)
	f.view(func(f *fakeBackend) {
		lp := f.ports["dying"]
		lp.Name = DeletingPortName
		f.ports["dying"] = lp
	})
	dt := newDrvTest(t, f, DriverOptions{Limits: Limits{Batch: 1}})
	if rep := dt.recover(nil, nil); rep.Free != 1 || rep.Deleting != 1 {
		t.Errorf("recover report %+v, want 1 free and 1 deleting", rep)
	}
	if st := dt.state("dying"); st != StateDeleting {
		t.Errorf("port named %s is %s after Recover, want deleting", DeletingPortName, st)
	}
	dt.run()
	waitFor(t, "the port being deleted deleted", func() bool { return !f.has("dying") })
	f.view(func(f *fakeBackend) {
		mark, del := slices.Index(f.calls, "mark"), slices.Index(f.calls, "delete")
		if !slices.Contains(f.marks, "dying "+DeletingPortName+" ") || mark < 0 || del < mark {
			t.Errorf("calls %q, marks %q: want dying renamed %s before the delete", f.calls, f.marks, DeletingPortName)
		}
	})
}
