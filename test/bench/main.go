// Command bench measures kuryr against the real neutron-server, real network namespaces and the
// real kuryr-cni and kuryr-agent binaries; hack/bench.sh (`make bench`) runs every mode in one go
// and prints one table, written also as JSON and as an SVG plot.
//
// Modes:
//   - latency: CNI ADD and DEL through real plugin binaries, sequential pods and bursts of
//     concurrent pods, as one labelled set of rows (kuryr in pool and noop mode, and the reference
//     bridge + host-local plugins, the floor of kernel work); with -exec-usage also the kuryr-cni
//     executions' wall time, CPU and peak RSS.
//   - pooled: a bare-metal agent with pre-created ports: start-up time and Neutron requests with
//     100 and 1000 ports, resident memory with 1000 pooled ports and 200 attached pods, and the
//     Neutron requests of the ADD path (ADDs answered while every Neutron request is held).
//   - refill: how fast the agent fills an empty pool of 100 and refills it after 100 ADDs drain it.
//   - nested: Neutron requests per refill batch of a nested (trunk) agent.
//   - active: with a real neutron-openvswitch-agent, how long until a pod's port is ACTIVE, from
//     the pool and without (noop).
//   - report: the table of a rows file, bench-results.json and the SVG plot.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/kuryr-pools/kuryr/test/cnirun"
)

func main() {
	mode := flag.String("mode", "latency", "latency | pooled | refill | nested | active | report | clear (delete the kuryr ports of -host)")
	label := flag.String("label", "kuryr-pool", "latency: name of this set of rows")
	conflist := flag.String("conflist", "", "latency: the network configuration list (file)")
	binDirs := flag.String("cni-bin", "bin", "colon-separated plugin directories")
	cacheDir := flag.String("cache-dir", "/var/tmp/kuryr-bench/cni-cache", "libcni cache directory")
	sequential := flag.Int("sequential", 200, "latency: pods created then deleted one after the other")
	bursts := flag.String("bursts", "50,100", "latency: sizes of concurrent bursts")
	execUsage := flag.Bool("exec-usage", false, "latency: also report the plugin executions' wall time, CPU and peak RSS")
	out := flag.String("out", "", "append the rows as JSON lines to this file")
	before := flag.String("before-burst", "", "latency: command run before each burst (e.g. to fill the pool); BURST is set to its size")
	reportOf := flag.String("report", "", "report: the JSON-lines rows file")
	jsonOut := flag.String("json", "", "report: write the results as JSON here")
	svgOut := flag.String("svg", "", "report: write the plot here")
	var env benchEnv
	flag.StringVar(&env.fixture, "fixture", os.Getenv("KURYR_TEST_NEUTRON"), "the neutron-server fixture.json")
	flag.StringVar(&env.binDir, "bin", "bin", "directory of kuryr-agent and kuryr-cni")
	flag.StringVar(&env.dir, "dir", "/var/tmp/kuryr-bench", "work directory")
	flag.StringVar(&env.ovsdb, "ovsdb", os.Getenv("KURYR_TEST_OVSDB"), "OVSDB of the OVS that bare-metal ports bound by the emulated L2 agent are plugged into")
	flag.StringVar(&env.host, "host", "kuryr-test-bench1", "pooled, refill: the bare-metal host (an emulated L2 agent in the fixture)")
	flag.StringVar(&env.portCounts, "startup-ports", "100,1000", "pooled: pre-created port counts to start the agent with")
	flag.IntVar(&env.startups, "startups", 3, "pooled: agent starts per port count")
	flag.IntVar(&env.pods, "pods", 200, "pooled: pods attached for the memory figure")
	flag.IntVar(&env.refillPool, "refill-pool", 100, "refill: ports_pool_min of the refill figures")
	flag.IntVar(&env.batch, "batch", 10, "refill, nested: ports_pool_batch")
	flag.IntVar(&env.batches, "batches", 3, "nested: refill batches to count")
	flag.StringVar(&env.activeFixture, "active-fixture", "", "active: fixture.json of the neutron-server with a real L2 agent (hack/l2-agent-up.sh)")
	flag.IntVar(&env.activePods, "active-pods", 10, "active: pods per mode")
	flag.StringVar(&env.heapProfile, "heap-profile", "", "pooled: save the agent's heap profile (pprof) here once the memory figure is taken")
	flag.BoolVar(&env.keepPorts, "keep-ports", false, "pooled: reuse the host's ports and leave them at the end (creating 1000 takes minutes; for profiling runs)")
	flag.Parse()

	switch *mode {
	case "report":
		if err := report(*reportOf, *jsonOut, *svgOut, os.Stdout); err != nil {
			fail(err)
		}
	case "latency":
		runLatency(*label, *conflist, *binDirs, *cacheDir, *sequential, *bursts, *before, *execUsage, *out)
	case "clear":
		ctx := context.Background()
		_, c, err := env.neutron(ctx, env.fixture)
		if err == nil {
			err = clearHost(ctx, c, env.host)
		}
		if err != nil {
			fail(err)
		}
	case "pooled", "refill", "nested", "active":
		env.out = *out
		ctx := context.Background()
		var err error
		switch *mode {
		case "pooled":
			err = runPooled(ctx, &env)
		case "refill":
			err = runRefill(ctx, &env)
		case "nested":
			err = runNested(ctx, &env)
		case "active":
			err = runActive(ctx, &env)
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", *mode, err))
		}
	default:
		fail(fmt.Errorf("unknown -mode %q", *mode))
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	os.Exit(1)
}

// gnuTime measures a plugin's own peak memory (see rusageExec); without it the peak is not the plugin's.
const gnuTime = "/usr/bin/time"

// peakPods is the size of the -exec-usage pass that measures the plugin's peak memory.
const peakPods = 20

// newRunner is cnirun.NewRunner with plugin executions recorded.
func newRunner(conflist []byte, cacheDir string, binDirs ...string) (*cnirun.Runner, *rusageExec, error) {
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return nil, nil, fmt.Errorf("conflist: %w", err)
	}
	ex := &rusageExec{}
	return &cnirun.Runner{List: list, CNI: libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, ex)}, ex, nil
}

func runLatency(label, conflist, binDirs, cacheDir string, sequential int, bursts, before string, execUsage bool, out string) {
	data, err := os.ReadFile(conflist)
	if err != nil {
		fail(err)
	}
	r, ex, err := newRunner(data, cacheDir, strings.Split(binDirs, ":")...)
	if err != nil {
		fail(err)
	}
	if _, err := os.Stat(gnuTime); execUsage && err != nil {
		fail(fmt.Errorf("-exec-usage needs GNU time at %s (apt-get install time) for the plugin's own peak memory", gnuTime))
	}
	var rows []Row
	if sequential > 0 {
		rows = append(rows, runSequential(r, label, sequential)...)
		if execUsage {
			scenario := fmt.Sprintf("sequential-%d", sequential)
			adds, dels := ex.take("ADD"), ex.take("DEL")
			// The peak memory from a short pass of its own through GNU time, which adds its fork
			// and exec to the latency: the rows above are measured without it.
			ex.timeBin = gnuTime
			runSequential(r, label, peakPods)
			ex.timeBin = ""
			rows = append(rows, usageRows(label, scenario, "ADD", adds, ex.take("ADD"))...)
			rows = append(rows, usageRows(label, scenario, "DEL", dels, ex.take("DEL"))...)
		}
	}
	for _, b := range strings.Split(bursts, ",") {
		var n int
		if _, err := fmt.Sscan(b, &n); err != nil || n <= 0 {
			continue
		}
		if before != "" {
			if err := runHook(before, n); err != nil {
				fail(fmt.Errorf("before-burst hook: %w", err))
			}
		}
		rows = append(rows, runBurst(r, label, n)...)
	}
	appendRows(out, rows...)
}

func newPods(n int, prefix string) []*cnirun.Pod {
	pods := make([]*cnirun.Pod, 0, n)
	for i := 0; i < n; i++ {
		p, err := cnirun.NewPod("bench", fmt.Sprintf("%s-%03d", prefix, i))
		if err != nil {
			fail(err)
		}
		pods = append(pods, p)
	}
	return pods
}

func runSequential(r *cnirun.Runner, label string, n int) []Row {
	ctx := context.Background()
	pods := newPods(n, "seq")
	defer closeAll(pods)
	adds, addErrs, addWall := sequentialPhase(ctx, pods, r.Add)
	dels, delErrs, delWall := sequentialPhase(ctx, pods, r.Del)
	return []Row{latencyRow(label, fmt.Sprintf("sequential-%d", n), "ADD", adds, addErrs, addWall),
		latencyRow(label, fmt.Sprintf("sequential-%d", n), "DEL", dels, delErrs, delWall)}
}

type podOp func(context.Context, *cnirun.Pod) (time.Duration, error)

func sequentialPhase(ctx context.Context, pods []*cnirun.Pod, op podOp) ([]time.Duration, int, time.Duration) {
	var ds []time.Duration
	errs := 0
	start := time.Now()
	for _, p := range pods {
		d, err := op(ctx, p)
		if err != nil {
			errs++
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		ds = append(ds, d)
	}
	return ds, errs, time.Since(start)
}

func burstPhase(ctx context.Context, pods []*cnirun.Pod, op podOp) ([]time.Duration, int, time.Duration) {
	var mu sync.Mutex
	var ds []time.Duration
	errs := 0
	var wg sync.WaitGroup
	start := time.Now()
	for _, p := range pods {
		wg.Add(1)
		go func(p *cnirun.Pod) {
			defer wg.Done()
			d, err := op(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				fmt.Fprintln(os.Stderr, err)
				return
			}
			ds = append(ds, d)
		}(p)
	}
	wg.Wait()
	return ds, errs, time.Since(start)
}

func runBurst(r *cnirun.Runner, label string, n int) []Row {
	ctx := context.Background()
	pods := newPods(n, fmt.Sprintf("burst%d", n))
	defer closeAll(pods)
	adds, addErrs, addWall := burstPhase(ctx, pods, r.Add)
	dels, delErrs, delWall := burstPhase(ctx, pods, r.Del)
	return []Row{latencyRow(label, fmt.Sprintf("burst-%d", n), "ADD", adds, addErrs, addWall),
		latencyRow(label, fmt.Sprintf("burst-%d", n), "DEL", dels, delErrs, delWall)}
}

func closeAll(pods []*cnirun.Pod) {
	for _, p := range pods {
		_ = p.Close()
	}
}
