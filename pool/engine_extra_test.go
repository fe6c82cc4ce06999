package pool

import (
	"errors"
	"testing"
)

func TestDiscard(t *testing.T) {
	k := Key{Node: "n1", Project: "p", Network: "net"}
	port := func(id string) Port { return Port{ID: id, Key: k, SGs: NewSGSet("sg")} }
	e := NewEngine(Limits{Min: 3, Batch: 2}, newEngClock())
	if err := e.AddInUse(port("p1"), "c1/eth0"); err != nil {
		t.Fatal(err)
	}
	e.AddFree(port("p2"))

	got, err := e.Discard("p1")
	if err != nil || got.ID != "p1" {
		t.Fatalf("Discard(p1) = %v, %v; want port p1", got.ID, err)
	}
	if _, st, _ := e.Get("p1"); st != StateDeleting {
		t.Errorf("p1 is %s after Discard, want deleting", st)
	}
	if _, ok := e.Owner("c1/eth0"); ok {
		t.Error("the owner still holds a port after Discard")
	}
	if s := e.Stats(k); s.InUse != 0 || s.Deleting != 1 || s.Free != 1 {
		t.Errorf("stats after Discard: %+v", s)
	}
	// Busy: the next Tick does not plan it again; after DeleteFailed it does.
	if plan := e.Tick(); len(plan.Delete) != 0 {
		t.Errorf("Tick planned a busy discarded port again: %v", plan.Delete)
	}
	e.DeleteFailed("p1")
	if plan := e.Tick(); len(plan.Delete) != 1 || plan.Delete[0].ID != "p1" {
		t.Errorf("Tick after DeleteFailed planned %v, want p1", plan.Delete)
	}
	e.Deleted("p1")
	if _, _, ok := e.Get("p1"); ok {
		t.Error("p1 still known after Deleted")
	}
	if err := checkEngine(e); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		id   string
		want error
	}{
		{"p2", ErrState},       // free
		{"p1", ErrUnknownPort}, // deleted
		{"nope", ErrUnknownPort},
	} {
		if _, err := e.Discard(tc.id); !errors.Is(err, tc.want) {
			t.Errorf("Discard(%s) = %v, want %v", tc.id, err, tc.want)
		}
	}
	if err := checkEngine(e); err != nil {
		t.Fatal(err)
	}
}
