package pool

import (
	"fmt"
	"sync/atomic"
	"testing"
)

func benchEngine(b *testing.B, free int) (*Engine, []string) {
	b.Helper()
	e := NewEngine(Limits{Min: 5, Batch: 10}, newEngClock())
	ports := make([]Port, free)
	owners := make([]string, free)
	for i := range ports {
		ports[i] = mkPort(fmt.Sprintf("port-%d", i), keyA, sg1)
		owners[i] = fmt.Sprintf("%064x/eth0", i)
	}
	e.AddFree(ports...)
	e.EnsurePool(keyB, sg1)
	return e, owners
}

// BenchmarkAcquireRelease is the CNI ADD + DEL hot path: one Acquire and one Release per op on a
// pool of 1024 ports. When the pool runs dry the update loop recycles everything, off the clock.
func BenchmarkAcquireRelease(b *testing.B) {
	e, owners := benchEngine(b, 1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(owners) {
			b.StopTimer()
			for _, p := range e.Tick().Recycle {
				e.Recycled(p.ID)
			}
			i = 0
			b.StartTimer()
		}
		if _, err := e.Acquire(keyA, sg1, owners[i]); err != nil {
			b.Fatal(err)
		}
		if _, err := e.Release(owners[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkAcquireReleasePlan adds the PlanRefills call the agent makes after each of them.
func BenchmarkAcquireReleasePlan(b *testing.B) {
	e, owners := benchEngine(b, 1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(owners) {
			b.StopTimer()
			for _, p := range e.Tick().Recycle {
				e.Recycled(p.ID)
			}
			i = 0
			b.StartTimer()
		}
		if _, err := e.Acquire(keyA, sg1, owners[i]); err != nil {
			b.Fatal(err)
		}
		e.PlanRefills()
		if _, err := e.Release(owners[i]); err != nil {
			b.Fatal(err)
		}
		e.PlanRefills()
		i++
	}
}

// BenchmarkAcquireAbortParallel measures the cost of the one mutex under contention.
func BenchmarkAcquireAbortParallel(b *testing.B) {
	e, owners := benchEngine(b, 1024)
	b.ReportAllocs()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		owner := owners[next.Add(1)-1]
		for pb.Next() {
			g, err := e.Acquire(keyA, sg1, owner)
			if err != nil {
				b.Error(err)
				return
			}
			if err := e.Abort(g.Port.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkTick is one update loop over 1024 ports: half free, a quarter in use, a quarter cooled.
func BenchmarkTick(b *testing.B) {
	e, owners := benchEngine(b, 1024)
	for i := range 512 {
		if _, err := e.Acquire(keyA, sg1, owners[i]); err != nil {
			b.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := e.Release(owners[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		plan := e.Tick()
		b.StopTimer()
		for _, p := range plan.Recycle { // back to cooling for the next round
			e.Recycled(p.ID)
			o := "again/" + p.ID
			if _, err := e.Acquire(keyA, sg1, o); err != nil {
				b.Fatal(err)
			}
			if _, err := e.Release(o); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
}
