package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func readRows(path string) ([]Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows []Row
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		rows = append(rows, r)
	}
	return rows, sc.Err()
}

// Target is one of the goals, judged on the rows.
type Target struct {
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// Results is bench-results.json.
type Results struct {
	Date    string   `json:"date"`
	Machine Machine  `json:"machine"`
	Rows    []Row    `json:"rows"`
	Targets []Target `json:"targets"`
}

// Machine says where the figures come from.
type Machine struct {
	CPUs    int    `json:"cpus"`
	Kernel  string `json:"kernel"`
	LoadAvg string `json:"loadavg"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

func isLatency(r Row) bool {
	return r.Unit == "ms" && (r.Op == "ADD" || r.Op == "DEL") && (r.Label == "kuryr-pool" || r.Label == "kuryr-noop" || r.Label == "bridge")
}

func find(rows []Row, label, scenario, op string) *Row {
	for i := range rows {
		if rows[i].Label == label && rows[i].Scenario == scenario && rows[i].Op == op {
			return &rows[i]
		}
	}
	return nil
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// noopFor is the noop row of the same scenario or, when noop ran other sizes (BENCH_NOOP_*), of the
// same kind of scenario.
func noopFor(rows []Row, r Row) *Row {
	kind, _, _ := strings.Cut(r.Scenario, "-")
	var sameKind *Row
	for i := range rows {
		n := &rows[i]
		if n.Label != "kuryr-noop" || n.Op != r.Op || n.Unit != "ms" {
			continue
		}
		if n.Scenario == r.Scenario {
			return n
		}
		if nk, _, _ := strings.Cut(n.Scenario, "-"); nk == kind && sameKind == nil {
			sameKind = n
		}
	}
	return sameKind
}

// report prints the rows of a JSON-lines file as one table (the CNI latencies with their ratios to
// the floor and to noop, then every other figure, then the targets) and writes the JSON and plot.
func report(path, jsonPath, svgPath string, w io.Writer) error {
	rows, err := readRows(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%-14s %-17s %-4s %5s %10s %10s %10s %6s %13s %13s %13s\n",
		"plugin", "scenario", "op", "n", "p50 ms", "p99 ms", "max ms", "errors", "p50 vs bridge", "p99 vs bridge", "noop/pool p50")
	fmt.Fprintln(w, strings.Repeat("-", 126))
	for _, r := range rows {
		if !isLatency(r) {
			continue
		}
		vsBridge, vsBridge99, vsNoop := "-", "-", "-"
		if r.Label != "bridge" {
			if b := find(rows, "bridge", r.Scenario, r.Op); b != nil {
				vsBridge, vsBridge99 = ratio(r.P50, b.P50), ratio(r.P99, b.P99)
			}
		}
		if r.Label == "kuryr-pool" {
			if n := noopFor(rows, r); n != nil {
				vsNoop = ratio(n.P50, r.P50)
			}
		}
		fmt.Fprintf(w, "%-14s %-17s %-4s %5d %10.2f %10.2f %10.2f %6d %13s %13s %13s\n",
			r.Label, r.Scenario, r.Op, r.N, r.P50, r.P99, r.Max, r.Errors, vsBridge, vsBridge99, vsNoop)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-12s %-24s %-22s %5s %10s %10s %10s %-9s %s\n", "what", "scenario", "figure", "n", "p50", "p99", "max", "unit", "note")
	fmt.Fprintln(w, strings.Repeat("-", 126))
	for _, r := range rows {
		if isLatency(r) {
			continue
		}
		if r.N > 1 {
			fmt.Fprintf(w, "%-12s %-24s %-22s %5d %10.2f %10.2f %10.2f %-9s %s\n", r.Label, r.Scenario, r.Op, r.N, r.P50, r.P99, r.Max, r.Unit, r.Note)
		} else {
			fmt.Fprintf(w, "%-12s %-24s %-22s %5d %10.2f %10s %10s %-9s %s\n", r.Label, r.Scenario, r.Op, r.N, r.P50, "", "", r.Unit, r.Note)
		}
	}
	targets := judge(rows)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "targets:")
	for _, t := range targets {
		verdict := "MET   "
		if !t.Met {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "  %s %-58s %s\n", verdict, t.Goal, t.Measured)
	}
	res := Results{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Rows: rows, Targets: targets}
	if jsonPath != "" {
		data, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(jsonPath, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	if svgPath != "" {
		if err := os.WriteFile(svgPath, []byte(plot(res)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// judge checks the targets against the rows that are there.
func judge(rows []Row) []Target {
	var out []Target
	for _, r := range rows {
		if r.Label != "kuryr-pool" || r.Op != "ADD" || !isLatency(r) {
			continue
		}
		if b := find(rows, "bridge", r.Scenario, "ADD"); b != nil && b.P50 > 0 {
			out = append(out, Target{Goal: "ADD p50 within 1.3x of bridge, " + r.Scenario,
				Measured: fmt.Sprintf("%.2fx (%.1f vs %.1f ms)", r.P50/b.P50, r.P50, b.P50), Met: r.P50 <= 1.3*b.P50})
			out = append(out, Target{Goal: "ADD p99 within 2x of bridge, " + r.Scenario,
				Measured: fmt.Sprintf("%.2fx (%.1f vs %.1f ms)", r.P99/b.P99, r.P99, b.P99), Met: r.P99 <= 2*b.P99})
		}
		// Every scenario noop ran too; a sequential one against noop's sequential run of other size.
		if n := noopFor(rows, r); n != nil && (n.Scenario == r.Scenario || strings.HasPrefix(r.Scenario, "sequential")) {
			out = append(out, Target{Goal: "ADD at least 20x faster than noop, " + r.Scenario,
				Measured: fmt.Sprintf("%.1fx (%.1f vs %.1f ms p50)", n.P50/r.P50, r.P50, n.P50), Met: n.P50 >= 20*r.P50})
		}
	}
	var startupReqs []string
	constant := true
	first := -1.0
	for _, r := range rows {
		switch {
		case r.Label == "kuryr-agent" && r.Op == "VmRSS" && strings.Contains(r.Scenario, "pods") && !strings.HasSuffix(r.Scenario, "-0-pods"):
			// The 50 MB: 50e6 bytes, 47.7 MiB.
			const limitMiB = 50e6 / (1 << 20)
			out = append(out, Target{Goal: "agent RSS < 50 MB, " + r.Scenario, Measured: fmt.Sprintf("%.1f MiB (%.1f MB)", r.P50, r.P50*(1<<20)/1e6), Met: r.P50 < limitMiB})
		case r.Label == "kuryr-agent" && r.Op == "ready - neutron":
			out = append(out, Target{Goal: "start-up within 1 s of Neutron's time, " + strings.TrimPrefix(r.Scenario, "startup-"),
				Measured: fmt.Sprintf("%.0f ms beyond Neutron's (p50; max %.0f)", r.P50, r.Max), Met: r.Max < 1000})
		case r.Label == "kuryr-agent" && r.Op == "neutron requests" && strings.HasPrefix(r.Scenario, "startup-"):
			startupReqs = append(startupReqs, fmt.Sprintf("%g (%s)", r.P50, strings.TrimPrefix(r.Scenario, "startup-")))
			if first >= 0 && r.Max != first {
				constant = false
			}
			if r.P50 != r.Max {
				constant = false
			}
			first = r.Max
		case r.Op == "neutron requests/ADD":
			out = append(out, Target{Goal: "no Neutron request on the ADD path", Measured: fmt.Sprintf("%g per ADD: %s", r.P50, r.Note), Met: r.P50 == 0})
		case r.Op == "requests/batch":
			out = append(out, Target{Goal: "2 Neutron requests per nested refill batch", Measured: fmt.Sprintf("%.2f: %s", r.P50, r.Note), Met: r.P50 <= 2})
		}
	}
	if len(startupReqs) > 0 {
		out = append(out, Target{Goal: "start-up Neutron requests independent of the port count",
			Measured: strings.Join(startupReqs, ", "), Met: constant})
	}
	return out
}
