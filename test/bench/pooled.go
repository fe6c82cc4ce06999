package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/pool"
)

const benchCluster = "kuryr-bench"

// hostPorts lists the kuryr ports bound to host.
func hostPorts(ctx context.Context, c *neutron.Client, host string) ([]string, error) {
	ports, err := c.ListPorts(ctx, neutron.PortFilter{DeviceOwners: []string{pool.DeviceOwnerKuryr}, HostID: host})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ports))
	for i, p := range ports {
		ids[i] = p.ID
	}
	return ids, nil
}

// clearHost deletes every kuryr port bound to host (the bench's own host).
func clearHost(ctx context.Context, c *neutron.Client, host string) error {
	ids, err := hostPorts(ctx, c, host)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	start := time.Now()
	if failed := c.DeletePorts(ctx, ids); len(failed) > 0 {
		return fmt.Errorf("delete %d ports of %s: %d failed", len(ids), host, len(failed))
	}
	fmt.Fprintf(os.Stderr, "deleted %d ports of %s in %s\n", len(ids), host, time.Since(start).Round(time.Millisecond))
	return nil
}

// precreate creates n pool ports for host as the agent does (name, device_owner, binding, tags),
// in bulk requests of 100.
func precreate(ctx context.Context, c *neutron.Client, fx fakeneutron.Fixture, host string, n int) error {
	spec := neutron.PortSpec{NetworkID: fx.PodNetwork, ProjectID: fx.Project, SubnetIDs: []string{fx.PodSubnet},
		Name: pool.AvailablePortName, DeviceOwner: pool.DeviceOwnerKuryr, HostID: host, SecurityGroups: fx.SecurityGroups,
		Tags: []string{neutron.ClusterTag(benchCluster), neutron.NodeTag(host)}}
	start := time.Now()
	for done := 0; done < n; {
		k := min(100, n-done)
		if _, err := c.CreatePorts(ctx, slices.Repeat([]neutron.PortSpec{spec}, k)); err != nil {
			return fmt.Errorf("pre-create ports: %w", err)
		}
		done += k
	}
	fmt.Fprintf(os.Stderr, "pre-created %d ports for %s in %s\n", n, host, time.Since(start).Round(time.Millisecond))
	return nil
}

// runPooled: start-up with pre-created ports, memory with pooled ports and attached pods, and the
// Neutron requests of the ADD path.
func runPooled(ctx context.Context, e *benchEnv) error {
	fx, c, err := e.neutron(ctx, e.fixture)
	if err != nil {
		return err
	}
	if !slices.Contains(fx.BareMetalHosts, e.host) {
		return fmt.Errorf("host %s has no emulated L2 agent in %s (hack/neutron-up.sh BM_HOSTS)", e.host, e.fixture)
	}
	have := 0
	if e.keepPorts {
		ids, err := hostPorts(ctx, c, e.host)
		if err != nil {
			return err
		}
		have = len(ids)
	} else {
		if err := clearHost(ctx, c, e.host); err != nil {
			return err
		}
		defer func() {
			if err := clearHost(context.WithoutCancel(ctx), c, e.host); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	var counts []int
	for _, s := range strings.Split(e.portCounts, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err == nil && n > 0 {
			counts = append(counts, n)
		}
	}
	slices.Sort(counts)
	for _, n := range counts {
		if n < have {
			return fmt.Errorf("-keep-ports: %s already has %d ports, more than %d", e.host, have, n)
		}
		if err := precreate(ctx, c, fx, e.host, n-have); err != nil {
			return err
		}
		have = n
		if err := startupRows(e, fx, n); err != nil {
			return err
		}
	}
	return memoryRows(ctx, e, fx, have)
}

// startupRows starts the agent e.startups times on n pre-created ports: time until /ready, the
// Neutron requests made by then, and the time Neutron took to answer them.
func startupRows(e *benchEnv, fx fakeneutron.Fixture, n int) error {
	scenario := fmt.Sprintf("startup-%d-ports", n)
	var ready, neutronTime, listTime, overhead, requests []float64
	var ops string
	for i := 0; i < e.startups; i++ {
		a, err := startAgent(e, agentConf{name: fmt.Sprintf("startup-%d-%d", n, i), node: e.host, fx: fx, ovsdb: e.ovsdb, cluster: benchCluster})
		if err != nil {
			return err
		}
		d, err := a.waitReady(5 * time.Minute)
		if err != nil {
			a.stop()
			return err
		}
		s, err := a.scrape()
		a.stop()
		if err != nil {
			return err
		}
		nt := total(s.latency) * 1000
		ready = append(ready, ms(d))
		neutronTime = append(neutronTime, nt)
		listTime = append(listTime, s.latency["ports.list"]*1000)
		overhead = append(overhead, ms(d)-nt)
		requests = append(requests, total(s.requests))
		ops = opsString(s.requests)
		if s.free != float64(n) {
			return fmt.Errorf("%s: the agent loaded %g ports into its pool, want %d", scenario, s.free, n)
		}
	}
	r := distRow("kuryr-agent", scenario, "ready", "ms", ready)
	r.Note = "process start to /ready 200"
	rn := distRow("kuryr-agent", scenario, "neutron time", "ms", neutronTime)
	rn.Note = "sum of the Neutron requests' latency before ready"
	rl := distRow("kuryr-agent", scenario, "ports.list time", "ms", listTime)
	ro := distRow("kuryr-agent", scenario, "ready - neutron", "ms", overhead)
	ro.Note = "target: < 1000 ms"
	rq := distRow("kuryr-agent", scenario, "neutron requests", "requests", requests)
	rq.Note = ops
	appendRows(e.out, r, rn, rl, ro, rq)
	return nil
}

// memoryRows attaches e.pods pods to an agent holding n pooled ports and reads its resident memory.
// The ADDs run while every Neutron request is held by a proxy: if they all succeed, the ADD path
// made no Neutron request.
func memoryRows(ctx context.Context, e *benchEnv, fx fakeneutron.Fixture, n int) error {
	proxy, err := newHoldProxy(fx.Endpoint)
	if err != nil {
		return err
	}
	defer proxy.close()
	a, err := startAgent(e, agentConf{name: "memory", node: e.host, fx: fx, ovsdb: e.ovsdb, cluster: benchCluster, endpoint: proxy.url,
		pprof: e.heapProfile != ""})
	if err != nil {
		return err
	}
	defer a.stop()
	if _, err := a.waitReady(5 * time.Minute); err != nil {
		return err
	}
	scenario := fmt.Sprintf("%d-ports-%d-pods", n, e.pods)
	mem0, err := a.memory()
	if err != nil {
		return err
	}
	conflist, err := os.ReadFile(a.conflst)
	if err != nil {
		return err
	}
	r, ex, err := newRunner(conflist, a.dir+"/cni-cache", e.binDir)
	if err != nil {
		return err
	}
	pods := newPods(e.pods, "mem")
	defer closeAll(pods)
	before, err := a.scrape()
	if err != nil {
		return err
	}
	proxy.hold()
	var adds []time.Duration
	errs := 0
	start := time.Now()
	for _, p := range pods {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		d, err := r.Add(actx, p)
		cancel()
		if err != nil {
			errs++
			fmt.Fprintln(os.Stderr, err)
			if errs > 3 {
				break
			}
			continue
		}
		adds = append(adds, d)
	}
	wall := time.Since(start)
	heldReqs := proxy.heldReqs.Load()
	proxy.release()
	// Let the requests held meanwhile (asynchronous port bookkeeping) finish, then count them.
	var after scrape
	if err := waitFor(2*time.Minute, "the held Neutron requests to finish", func() (bool, error) {
		s, err := a.scrape()
		after = s
		return err == nil && total(sub(s.requests, before.requests)) >= float64(heldReqs), err
	}); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	if after, err = a.scrape(); err != nil {
		return err
	}
	mem, err := a.memory()
	if err != nil {
		return err
	}
	if e.heapProfile != "" {
		if err := a.saveProfile("heap", e.heapProfile); err != nil {
			return err
		}
	}
	during := sub(after.requests, before.requests)
	perPod := map[string]float64{}
	for op, v := range during {
		perPod[op] = v / float64(max(len(adds), 1))
	}
	sync := 0.0
	note := fmt.Sprintf("%d of %d ADDs answered while every Neutron request was held", len(adds), len(pods))
	if len(adds) != len(pods) {
		sync = -1 // unknown: some ADD needed Neutron
		note += " (some ADD waited for Neutron)"
	}
	held := latencyRow("kuryr-pool", "neutron-held-"+fmt.Sprint(e.pods), "ADD", adds, errs, wall)
	held.Note = "ADD latency with Neutron unreachable (OVS plug)"
	rows := []Row{
		valueRow("kuryr-agent", "add-path", "neutron requests/ADD", "requests", sync, note),
		valueRow("kuryr-agent", "add-path", "async requests/pod", "requests", total(perPod), "after the reply, by op: "+opsString(perPod)),
		held,
		valueRow("kuryr-agent", fmt.Sprintf("%d-ports-0-pods", n), "VmRSS", "MiB", float64(mem0.rss)/1024, "after start-up: "+mem0.String()),
		valueRow("kuryr-agent", scenario, "VmRSS", "MiB", float64(mem.rss)/1024, "target: < 50 MB (47.7 MiB); "+mem.String()),
		valueRow("kuryr-agent", scenario, "VmHWM", "MiB", float64(mem.hwm)/1024, "peak resident memory"),
	}
	rows = append(rows, usageRows("kuryr-cni", "sequential-"+fmt.Sprint(e.pods), "ADD", ex.take("ADD"), nil)...)
	dels, delErrs, delWall := sequentialPhase(ctx, pods, r.Del)
	rows = append(rows, latencyRow("kuryr-pool", "neutron-held-"+fmt.Sprint(e.pods), "DEL", dels, delErrs, delWall))
	rows[len(rows)-1].Note = "Neutron reachable again (OVS unplug)"
	rows = append(rows, usageRows("kuryr-cni", "sequential-"+fmt.Sprint(e.pods), "DEL", ex.take("DEL"), nil)...)
	appendRows(e.out, rows...)
	if errs > 0 {
		return fmt.Errorf("%d ADDs failed with Neutron held", errs)
	}
	return nil
}
