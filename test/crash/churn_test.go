package crash

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/test/cnirun"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// Churn size: at least this many pods through a completed ADD and a completed DEL, and this many
// SIGKILLs of the agent.
const (
	churnPods    = 300
	churnKills   = 20
	churnWorkers = 3 // concurrent pods in flight
	churnMaxLive = 2 // live pods per worker
)

// TestCrashChurn runs pods up and down through the real kuryr-cni, several at once, while the agent
// is killed with SIGKILL at random moments (also while it starts) and restarted each time; the
// runtime retries as kubelet does. Afterwards no tagged port is leaked, none is held twice, every
// live pod's interface is intact, and after the last DEL every port is back in the pool.
func TestCrashChurn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	untaggedBefore, err := e.untaggedOnNetwork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A pool larger than the live pods, so that ADD is local as designed and recycling (one port
	// update) keeps it full: a refill is a bulk create, and a loaded single-worker neutron-server
	// takes seconds per port; each kill leaves one running that the next start repeats (Resync
	// adopts its ports later), hence small batches. No ports_pool_max: the crash points cover
	// deletion.
	a := newAgent(t, e, "kuryr-test-crash1", "[vif_pool]\nports_pool_min = 8\nports_pool_batch = 2\nports_pool_max = 0\n", "--standalone")
	a.startReady()
	a.waitFree(t, ctx, 8)
	rt := newRuntime(t, a)
	seed := time.Now().UnixNano()
	t.Logf("seed %d, node %s", seed, a.node)

	var kills atomic.Int64
	done := func() bool {
		return rt.adds.Load() >= churnPods && rt.dels.Load() >= churnPods && kills.Load() >= churnKills
	}
	var wg sync.WaitGroup
	errc := make(chan error, churnWorkers+1)
	// The killer: SIGKILL after a random time up and, one time in two, again within 1.5 s of the
	// restart, mostly while the agent loads its state. Once enough kills are done it lets the agent
	// run until the churn is done too.
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(uint64(seed), 0))
		for !done() && ctx.Err() == nil {
			if kills.Load() >= churnKills {
				sleep(ctx, rng, 200, 200)
				continue
			}
			sleep(ctx, rng, 1000, 4000)
			a.stop(syscall.SIGKILL)
			kills.Add(1)
			a.start()
			if rng.IntN(2) == 0 {
				sleep(ctx, rng, 0, 1500)
				a.stop(syscall.SIGKILL)
				kills.Add(1)
				a.start()
			}
			if err := a.waitReady(60 * time.Second); err != nil {
				errc <- fmt.Errorf("restart after kill %d: %w", kills.Load(), err)
				cancel()
				return
			}
		}
	})
	for w := range churnWorkers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(w+1)))
			var live []*cnirun.Pod
			for !done() && ctx.Err() == nil {
				if len(live) < churnMaxLive && (len(live) == 0 || rng.IntN(100) < 55) {
					p, err := rt.addLikeKubelet(ctx, rt.sandbox(), rng)
					if err != nil {
						errc <- err
						cancel()
						return
					}
					if p != nil {
						live = append(live, p)
					}
					continue
				}
				i := rng.IntN(len(live))
				p := live[i]
				live = append(live[:i], live[i+1:]...)
				if err := rt.teardown(ctx, p, rng); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if a.exited() {
		t.Fatal("the agent is not running after the churn")
	}
	// The check below must see live pods: top them up if the churn happened to end with few.
	for rng := rand.New(rand.NewPCG(uint64(seed), 98)); len(rt.liveContainers()) < churnWorkers; {
		if _, err := rt.addLikeKubelet(ctx, rt.sandbox(), rng); err != nil {
			t.Fatal(err)
		}
	}
	r := a.settle(t, ctx, "after the churn", 90*time.Second, rt.liveContainers)

	// Every live pod goes away: then every port of the node is back in the pool.
	rng := rand.New(rand.NewPCG(uint64(seed), 99))
	for _, p := range rt.livePods() {
		if err := rt.teardown(ctx, p, rng); err != nil {
			t.Fatal(err)
		}
	}
	final := a.settle(t, ctx, "after every pod was deleted", 90*time.Second, rt.liveContainers)
	if final.InUse != 0 {
		t.Errorf("%d ports still in use after every pod was deleted", final.InUse)
	}
	untaggedAfter, err := e.untaggedOnNetwork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failed attempts the runtime retried:%s", rt.errSummary())
	t.Logf("agent start to ready: %s", a.readyTimes())
	doubles := rt.doubles()
	for _, d := range doubles {
		t.Errorf("double assignment seen by the runtime: %s", d)
	}
	testutil.Report(t, fmt.Sprintf("crash churn: kills=%d adds=%d dels=%d addRetries=%d delRetries=%d livePodsChecked=%d portsTagged=%d leaked=%d doubleAssigned=%d untaggedOnNetworkBefore=%d after=%d (shared network)",
		kills.Load(), rt.adds.Load(), rt.dels.Load(), rt.addErrs.Load(), rt.delErrs.Load(), r.Live, r.Tagged,
		len(r.Leaked)+len(final.Leaked), len(doubles)+len(r.DoubleAssigned)+len(final.DoubleAssigned), untaggedBefore, untaggedAfter))
}
