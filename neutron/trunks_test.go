package neutron

import (
	"errors"
	"testing"
	"time"
)

func TestVLANReservations(t *testing.T) {
	var v vlanReservations
	now := time.Unix(1000, 0)
	current := []Subport{{SegmentationID: 1}, {SegmentationID: 2}}
	got, err := v.choose("t1", current, 10, now)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, id := range got {
		if id < MinVLAN || id > MaxVLAN || id == 1 || id == 2 || seen[id] {
			t.Errorf("chose %d (in use, out of range or twice) in %v", id, got)
		}
		seen[id] = true
	}
	// In flight: another batch on the same trunk must not get them; another trunk may.
	again, err := v.choose("t1", current, MaxVLAN-2-10, now)
	if err != nil {
		t.Fatalf("the rest of the IDs: %v", err)
	}
	for _, id := range again {
		if seen[id] {
			t.Errorf("VLAN %d handed out twice on one trunk", id)
		}
	}
	if _, err := v.choose("t1", current, 1, now); !errors.Is(err, ErrNoFreeVLAN) {
		t.Errorf("all 4094 taken: %v, want ErrNoFreeVLAN", err)
	}
	if _, err := v.choose("t2", nil, 5, now); err != nil {
		t.Errorf("another trunk: %v", err)
	}
	// Released IDs are free again; held ones are free once the hold expires.
	v.release("t1", again)
	v.hold("t1", got, now.Add(time.Second))
	if _, err := v.choose("t1", current, MaxVLAN-2-10, now); err != nil {
		t.Errorf("after release: %v", err)
	}
	if _, err := v.choose("t1", current, 1, now); !errors.Is(err, ErrNoFreeVLAN) {
		t.Errorf("held IDs given out before the hold expired: %v", err)
	}
	if ids, err := v.choose("t1", current, 10, now.Add(2*time.Second)); err != nil || len(ids) != 10 {
		t.Errorf("after the hold: %v, %v", ids, err)
	}
}
