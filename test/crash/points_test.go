package crash

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/test/cnirun"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// TestCrashPoints kills the agent at every named point where it persists or changes state
// (internal/crashpoint): it runs with KURYR_CRASH_POINT set while pods come and go until it kills
// itself there, is restarted, and the runtime retries what was cut short, as kubelet does (the ADD
// again on the same sandbox, or DEL and a new sandbox; a DEL until it succeeds). Then the invariants
// hold.
func TestCrashPoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// ports_pool_max 3: the delete point is reached by populating the pool past it.
	a := newAgent(t, e, "kuryr-test-crash2", "[vif_pool]\nports_pool_min = 2\nports_pool_batch = 2\nports_pool_max = 3\n", "--standalone")
	a.startReady()
	a.waitFree(t, ctx, 2)
	rt := newRuntime(t, a)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	points := []struct {
		name string
		nth  int
		// agentDown: a pod is deleted while the agent is down, and the agent started with the
		// crash point then finds its interface gone (start-up recovery).
		agentDown bool
		// surplus: the pool is populated past ports_pool_max, so that the next tick deletes.
		surplus bool
		// drain: the pool's free ports are freed, so that the next tick refills whatever the
		// earlier points left in it.
		drain bool
	}{
		{name: "add-acquired", nth: 1},
		{name: "checkpoint-write", nth: 1},
		{name: "checkpoint-rename", nth: 1},
		{name: "add-checkpointed", nth: 1},
		{name: "add-plugged", nth: 1},
		{name: "mark-updated", nth: 1},
		{name: "checkpoint-write", nth: 2},
		{name: "checkpoint-rename", nth: 3},
		{name: "del-unplugged", nth: 1},
		{name: "del-checkpointed", nth: 1},
		{name: "del-released", nth: 1},
		{name: "recycle-reset", nth: 1},
		{name: "delete-done", nth: 1, surplus: true},
		{name: "refill-created", nth: 1, drain: true},
		{name: "recover-released", nth: 1, agentDown: true},
	}
	crashes := 0
	for i, pt := range points {
		what := fmt.Sprintf("%s:%d", pt.name, pt.nth)
		if pt.agentDown {
			// A live pod is deleted with the agent down: kuryr-cni removes the interface itself.
			p := rt.sandbox()
			if _, err := rt.addLikeKubelet(ctx, p, rng); err != nil {
				t.Fatal(err)
			}
			a.stop(syscall.SIGKILL)
			if err := rt.teardown(ctx, p, rng); err != nil {
				t.Fatal(err)
			}
		} else {
			a.stop(syscall.SIGTERM)
		}
		a.start(crashEnv(pt.name, pt.nth))
		if pt.surplus {
			if err := a.waitReady(60 * time.Second); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			n := 3
			resp, err := manage.NewClient(a.manageSock).Do(ctx, "POST", manage.PathPopulate, manage.PopulateRequest{Trunks: []string{a.node}, NumPorts: &n, Force: true}, true)
			// Refused while the agent dies at its crash point (the tick may get there first) is no failure.
			if err != nil && !a.exited() && a.waitAlive(2*time.Second) {
				t.Fatalf("%s: populate past ports_pool_max: %v %s", what, err, respBody(resp))
			}
		}
		if pt.drain {
			if err := a.waitReady(60 * time.Second); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			resp, err := manage.NewClient(a.manageSock).Do(ctx, "POST", manage.PathFree, manage.FreeRequest{Trunks: []string{a.node}}, true)
			if err != nil && !a.exited() && a.waitAlive(2*time.Second) {
				t.Fatalf("%s: free the pool: %v %s", what, err, respBody(resp))
			}
		}
		pendingAdd, pendingDel, err := driveUntilDeath(ctx, a, rt, 90*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		st, err := a.waitExit(10 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !killedBySIGKILL(st) {
			t.Fatalf("%s: the agent ended with %v, not killed at its crash point; log:\n%s", what, st, tail(a.log(), 40))
		}
		crashes++
		a.startReady()
		// The runtime retries what the crash cut short.
		for _, p := range pendingDel {
			if err := rt.teardown(ctx, p, rng); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		for _, p := range pendingAdd {
			if i%2 == 0 {
				if err := rt.add(ctx, p); err != nil {
					t.Fatalf("%s: the retried ADD of the same sandbox failed: %v", what, err)
				}
				continue
			}
			if err := rt.teardown(ctx, p, rng); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		r := a.settle(t, ctx, "after a crash at "+what, 90*time.Second, rt.liveContainers)
		t.Logf("crash at %s: recovered; %s", what, r)
	}
	for _, p := range rt.livePods() {
		if err := rt.teardown(ctx, p, rng); err != nil {
			t.Fatal(err)
		}
	}
	final := a.settle(t, ctx, "after every pod was deleted", 90*time.Second, rt.liveContainers)
	doubles := rt.doubles()
	for _, d := range doubles {
		t.Errorf("double assignment seen by the runtime: %s", d)
	}
	testutil.Report(t, fmt.Sprintf("crash points: points=%d crashes=%d adds=%d dels=%d leaked=%d doubleAssigned=%d",
		len(points), crashes, rt.adds.Load(), rt.dels.Load(), len(final.Leaked), len(doubles)+len(final.DoubleAssigned)))
}

// driveUntilDeath runs pods up and down (two live at a time) until the agent exits. It returns the
// sandboxes whose ADD or DEL failed because of that, for the runtime to retry.
func driveUntilDeath(ctx context.Context, a *agentProc, rt *runtime, timeout time.Duration) (pendingAdd, pendingDel []*cnirun.Pod, err error) {
	deadline := time.Now().Add(timeout)
	// Wait for readiness or death: some points are reached while the agent starts.
	for !a.exited() {
		if time.Now().After(deadline) {
			return nil, nil, errors.New("the agent neither became ready nor reached its crash point")
		}
		if a.waitReady(100*time.Millisecond) == nil {
			break
		}
	}
	for !a.exited() {
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("the crash point was not reached in %s", timeout)
		}
		live := rt.livePods()
		if len(live) < 2 {
			p := rt.sandbox()
			if err := rt.add(ctx, p); err != nil {
				if a.exited() || !a.waitAlive(2*time.Second) {
					return []*cnirun.Pod{p}, nil, nil
				}
				return nil, nil, fmt.Errorf("ADD with the agent up: %w", err)
			}
			continue
		}
		p := live[0]
		if err := rt.del(ctx, p); err != nil {
			if a.exited() || !a.waitAlive(2*time.Second) {
				return nil, []*cnirun.Pod{p}, nil
			}
			return nil, nil, fmt.Errorf("DEL with the agent up: %w", err)
		}
		rt.destroy(p)
		time.Sleep(100 * time.Millisecond) // let the background work (marks, recycles, deletions) run
	}
	return nil, nil, nil
}
