package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// Every line the agent logs on the ADD and DEL path names the pod (with its namespace) and the
// container: operators grep one pod's story out of a node's log.
func TestADDAndDELLogLinesNameThePodAndContainer(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	logger := funcr.NewJSON(func(obj string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, obj)
	}, funcr.Options{Verbosity: 10})
	ctx := klog.NewContext(context.Background(), logger)

	f := newFixture(t, false, testPort("p1", 0))
	if _, err := f.svc.Add(ctx, f.req("c1")); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Del(ctx, f.req("c1")); err != nil {
		t.Fatal(err)
	}
	f.plugger.plugErr = errors.New("netlink: operation not permitted") // the failure path logs too (rollback)
	f.pools.free = append(f.pools.free, testPort("p2", 0))
	if _, err := f.svc.Add(ctx, f.req("c2")); err == nil {
		t.Fatal("ADD with a failing plug succeeded")
	}
	if err := f.svc.Del(ctx, f.req("c3")); err != nil { // nothing attached
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(lines) < 4 {
		t.Fatalf("only %d log lines on the ADD/DEL path: %v", len(lines), lines)
	}
	for _, l := range lines {
		if !strings.Contains(l, `"containerID":"c`) || !strings.Contains(l, `"pod":{"name":"pod-c`) || !strings.Contains(l, `"namespace":"demo"`) {
			t.Errorf("log line without the pod, its namespace and the container ID: %s", l)
		}
	}
}
