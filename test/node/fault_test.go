package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/kuryr-pools/kuryr/test/cnirun"
	"github.com/kuryr-pools/kuryr/test/faultproxy"
	"github.com/kuryr-pools/kuryr/test/invariant"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// TestNeutronFaults puts a fault-injecting proxy between the real agent and the real
// neutron-server: error answers (409, 429, 500, 503), resets, hung requests, slow listings, and a
// bulk create whose answer is lost after Neutron made the ports. Pods keep getting ports while the
// pool has some, the refills recover once Neutron does, and in the end no port is leaked, untagged
// or given twice (test/invariant over Neutron, the checkpoint, the pools and the kernel).
func TestNeutronFaults(t *testing.T) {
	n := newNeutron(t)
	db := ovsdb(t)
	px, err := faultproxy.New(n.fx.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	viaProxy := *n
	viaProxy.fx.Endpoint = px.URL
	// A host with an emulated L2 agent: bindings succeed, so a refill costs Neutron's create time.
	const node = "kuryr-test-fault1"
	a := startAgentWith(t, &viaProxy, node, "ovs", "[binding]\novsdb_connection = "+db+"\n[neutron]\ntimeout = 10\n", "--standalone")
	ctx := context.Background()
	eventually(t, time.Minute, "pool filled", func() (bool, string) {
		p := a.pools(t)
		return len(p) == 1 && p[0].Free >= 3, fmt.Sprint(p)
	})

	const ports = "/v2.0/ports"
	px.Inject(
		faultproxy.Fault{Method: http.MethodPost, PathPrefix: ports, Kind: faultproxy.Status, Status: http.StatusInternalServerError, Count: 2},
		faultproxy.Fault{Method: http.MethodPost, PathPrefix: ports, Kind: faultproxy.LoseAnswer, Count: 1},
		faultproxy.Fault{Method: http.MethodPost, PathPrefix: ports, Kind: faultproxy.Status, Status: http.StatusServiceUnavailable, Count: 1},
		faultproxy.Fault{Method: http.MethodPost, PathPrefix: ports, Kind: faultproxy.Status, Status: http.StatusTooManyRequests, Count: 1},
		faultproxy.Fault{Method: http.MethodPost, PathPrefix: ports, Kind: faultproxy.Reset, Count: 1},
		faultproxy.Fault{Method: http.MethodPost, PathPrefix: ports, Kind: faultproxy.Hang, Count: 1},
		faultproxy.Fault{Method: http.MethodPost, PathPrefix: ports, Kind: faultproxy.Status, Status: http.StatusConflict, Count: 1},
		// Renames, device_id marks and recycles: PUT on one port.
		faultproxy.Fault{Method: http.MethodPut, PathPrefix: ports + "/", Kind: faultproxy.Status, Status: http.StatusInternalServerError, Count: 3},
		faultproxy.Fault{Method: http.MethodPut, PathPrefix: ports + "/", Kind: faultproxy.Reset, Count: 2},
		faultproxy.Fault{Method: http.MethodGet, PathPrefix: ports, Kind: faultproxy.Delay, Delay: 2 * time.Second, Count: 3},
		faultproxy.Fault{Method: http.MethodDelete, PathPrefix: ports, Kind: faultproxy.Status, Status: http.StatusServiceUnavailable, Count: 2},
	)
	injected := px.Pending()

	// Pods come and go while Neutron misbehaves. The pool holds 3 or 4 ports: later pods wait
	// for refills that fail first; the runtime retries an ADD answered "try again later" (11), as
	// the kubelet does.
	pods := newPods(t, 10, "fault")
	var mu sync.Mutex
	live := map[*cnirun.Pod]bool{}
	retries := 0
	add := func(p *cnirun.Pod) error {
		for attempt := 0; ; attempt++ {
			_, err := a.runner.Add(ctx, p)
			var cniErr *types.Error
			if err == nil || !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater || attempt == 5 {
				return err
			}
			mu.Lock()
			retries++
			mu.Unlock()
			_, _ = a.runner.Del(ctx, p) // the kubelet tears a failed sandbox down before the retry
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(pods))
	for i, p := range pods {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 300 * time.Millisecond)
			if err := add(p); err != nil {
				errs <- fmt.Errorf("ADD %s: %w", p.Name, err)
				return
			}
			mu.Lock()
			live[p] = true
			mu.Unlock()
			if i%2 == 0 { // half of them go again at once
				if _, err := a.runner.Del(ctx, p); err != nil {
					errs <- fmt.Errorf("DEL %s: %w", p.Name, err)
					return
				}
				mu.Lock()
				delete(live, p)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("%v\nagent log (tail):\n%s", err, tail(a.log(), 40))
	}
	kinds, requests := px.Injected()
	testutil.Report(t, fmt.Sprintf("neutron faults: 10 pods through %d injected faults in %s (%d ADD retries); applied %v of %d Neutron requests; %d still pending",
		injected, time.Since(start).Round(time.Millisecond), retries, kinds, requests, px.Pending()))
	px.Heal()

	// The live pods work, and once Neutron is back the books balance: the ports whose create
	// answer was lost are found by their batch tag and deleted, failed deletions are retried.
	var containers []invariant.Container
	for p := range live {
		if err := a.runner.Check(ctx, p); err != nil {
			t.Errorf("CHECK %s: %v", p.Name, err)
		}
		containers = append(containers, invariant.Container{ContainerID: p.ContainerID, IfName: "eth0", Netns: p.NS.Path()})
	}
	opts := invariant.Options{Neutron: n.client, Node: node, Cluster: a.cluster, NetworkID: n.fx.PodNetwork,
		Checkpoint: filepath.Join(a.dir, "checkpoint.json"), ManageSocket: a.manageSock, Live: containers,
		OVSDB: db, OVSBridge: "br-int", PodNamespace: "node-test"}
	var rep *invariant.Report
	eventually(t, 90*time.Second, "every invariant once Neutron is healthy", func() (bool, string) {
		rep, err = invariant.Check(ctx, opts)
		if err != nil {
			return false, err.Error()
		}
		return rep.OK(), rep.String()
	})
	testutil.Report(t, fmt.Sprintf("neutron faults, after: %d ports tagged for the node (%d free, %d cooling, %d in use by %d live pods); leaked %d, double assignments %d",
		rep.Tagged, rep.Free, rep.Cooling, rep.InUse, rep.Live, len(rep.Leaked), len(rep.DoubleAssigned)))
	if kinds[faultproxy.LoseAnswer] != 1 {
		t.Errorf("the lost-answer fault was applied %d times: the suite did not exercise it", kinds[faultproxy.LoseAnswer])
	}
	for p := range live {
		if _, err := a.runner.Del(ctx, p); err != nil {
			t.Errorf("DEL %s: %v", p.Name, err)
		}
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
