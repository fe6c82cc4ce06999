package controller

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/klog/v2/ktesting"
)

var fastLease = LeaderOptions{Namespace: "kube-system", LeaseDuration: 1500 * time.Millisecond,
	RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond}

// TestLeaderElection: of two replicas only one works at a time; when the leader stops (releasing
// the Lease) the standby takes over.
func TestLeaderElection(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	kube := k8sfake.NewClientset()
	var running, maxRunning atomic.Int32
	started := make(chan string, 2)
	replica := func(ctx context.Context, id string) error {
		o := fastLease
		o.Identity = id
		return RunLeaderElected(ctx, kube, o, func(ctx context.Context) {
			n := running.Add(1)
			for {
				m := maxRunning.Load()
				if n <= m || maxRunning.CompareAndSwap(m, n) {
					break
				}
			}
			started <- id
			<-ctx.Done()
			running.Add(-1)
		})
	}
	ctxA, cancelA := context.WithCancel(ctx)
	ctxB, cancelB := context.WithCancel(ctx)
	defer cancelB()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs <- replica(ctxA, "a") }()
	first := waitFor(t, started)
	go func() { defer wg.Done(); errs <- replica(ctxB, "b") }()
	select {
	case id := <-started:
		t.Fatalf("replica %s started while %s leads", id, first)
	case <-time.After(2 * time.Second):
	}
	if first != "a" {
		t.Fatalf("leader %s, want a (it started first)", first)
	}
	cancelA()
	if second := waitFor(t, started); second != "b" {
		t.Fatalf("after a stopped, %s leads; want b", second)
	}
	cancelB()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("RunLeaderElected after cancel: %v, want nil", err)
		}
	}
	if m := maxRunning.Load(); m != 1 {
		t.Fatalf("%d replicas ran at once", m)
	}
}

func waitFor[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(30 * time.Second):
		t.Fatal("timed out")
		panic("unreachable")
	}
}

func TestHealth(t *testing.T) {
	var leading, ready atomic.Bool
	h := &Health{Leader: leaderelection.NewLeaderHealthzAdaptor(time.Second), Leading: leading.Load, Ready: ready.Load}
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()
	get := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		leading, ready bool
		path           string
		want           int
	}{
		{false, false, "/ready", 200}, // a standby is ready
		{true, false, "/ready", 503},  // the leader before its caches synced
		{true, true, "/ready", 200},
		{false, false, "/alive", 200}, // not wired to an elector yet: alive
	} {
		leading.Store(tc.leading)
		ready.Store(tc.ready)
		if got := get(tc.path); got != tc.want {
			t.Errorf("leading=%v ready=%v GET %s = %d, want %d", tc.leading, tc.ready, tc.path, got, tc.want)
		}
	}
}
