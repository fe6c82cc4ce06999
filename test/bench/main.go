// Command bench measures CNI ADD and DEL through real plugin binaries in real network namespaces:
// sequential pods and bursts of concurrent pods, as one labelled set of rows. hack/bench.sh runs it
// for kuryr in pool mode and in noop mode and for the reference bridge + host-local plugins (the
// floor of kernel work), then prints one table.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kuryr-pools/kuryr/test/cnirun"
)

// Row is one measured scenario.
type Row struct {
	Label    string  `json:"label"`
	Scenario string  `json:"scenario"`
	Op       string  `json:"op"`
	N        int     `json:"n"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	Maxms    float64 `json:"max_ms"`
	Errors   int     `json:"errors"`
	WallMs   float64 `json:"wall_ms"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func main() {
	label := flag.String("label", "kuryr-pool", "name of this set of rows")
	conflist := flag.String("conflist", "", "the network configuration list (file)")
	binDirs := flag.String("cni-bin", "bin", "colon-separated plugin directories")
	cacheDir := flag.String("cache-dir", "/var/tmp/kuryr-bench/cni-cache", "libcni cache directory")
	sequential := flag.Int("sequential", 200, "pods created then deleted one after the other")
	bursts := flag.String("bursts", "50,100", "sizes of concurrent bursts")
	out := flag.String("out", "", "append the rows as JSON lines to this file")
	before := flag.String("before-burst", "", "command run before each burst (e.g. to fill the pool); BURST is set to its size")
	reportOf := flag.String("report", "", "print the table of this JSON-lines file and exit")
	flag.Parse()
	if *reportOf != "" {
		if err := report(*reportOf, os.Stdout); err != nil {
			fail(err)
		}
		return
	}
	data, err := os.ReadFile(*conflist)
	if err != nil {
		fail(err)
	}
	r, err := cnirun.NewRunner(data, *cacheDir, strings.Split(*binDirs, ":")...)
	if err != nil {
		fail(err)
	}
	var rows []Row
	rows = append(rows, runSequential(r, *label, *sequential)...)
	for _, b := range strings.Split(*bursts, ",") {
		var n int
		if _, err := fmt.Sscan(b, &n); err != nil || n <= 0 {
			continue
		}
		if *before != "" {
			if err := runHook(*before, n); err != nil {
				fail(fmt.Errorf("before-burst hook: %w", err))
			}
		}
		rows = append(rows, runBurst(r, *label, n)...)
	}
	for _, row := range rows {
		fmt.Printf("%-14s %-16s %-4s n=%-4d p50=%8.2fms p99=%8.2fms max=%8.2fms errors=%d wall=%.0fms\n",
			row.Label, row.Scenario, row.Op, row.N, row.P50ms, row.P99ms, row.Maxms, row.Errors, row.WallMs)
	}
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fail(err)
		}
		enc := json.NewEncoder(f)
		for _, row := range rows {
			_ = enc.Encode(row)
		}
		f.Close()
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	os.Exit(1)
}

func row(label, scenario, op string, ds []time.Duration, errs int, wall time.Duration) Row {
	s := cnirun.Summarize(ds)
	return Row{Label: label, Scenario: scenario, Op: op, N: s.N, P50ms: ms(s.P50), P99ms: ms(s.P99), Maxms: ms(s.Max), Errors: errs, WallMs: ms(wall)}
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
	if n <= 0 {
		return nil
	}
	ctx := context.Background()
	pods := newPods(n, "seq")
	defer closeAll(pods)
	var adds, dels []time.Duration
	addErrs, delErrs := 0, 0
	start := time.Now()
	for _, p := range pods {
		d, err := r.Add(ctx, p)
		if err != nil {
			addErrs++
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		adds = append(adds, d)
	}
	addWall := time.Since(start)
	start = time.Now()
	for _, p := range pods {
		d, err := r.Del(ctx, p)
		if err != nil {
			delErrs++
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		dels = append(dels, d)
	}
	return []Row{row(label, fmt.Sprintf("sequential-%d", n), "ADD", adds, addErrs, addWall),
		row(label, fmt.Sprintf("sequential-%d", n), "DEL", dels, delErrs, time.Since(start))}
}

func runBurst(r *cnirun.Runner, label string, n int) []Row {
	ctx := context.Background()
	pods := newPods(n, fmt.Sprintf("burst%d", n))
	defer closeAll(pods)
	phase := func(op func(context.Context, *cnirun.Pod) (time.Duration, error)) ([]time.Duration, int, time.Duration) {
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
	adds, addErrs, addWall := phase(r.Add)
	dels, delErrs, delWall := phase(r.Del)
	return []Row{row(label, fmt.Sprintf("burst-%d", n), "ADD", adds, addErrs, addWall),
		row(label, fmt.Sprintf("burst-%d", n), "DEL", dels, delErrs, delWall)}
}

func closeAll(pods []*cnirun.Pod) {
	for _, p := range pods {
		_ = p.Close()
	}
}
