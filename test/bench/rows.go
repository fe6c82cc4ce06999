package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/kuryr-pools/kuryr/test/cnirun"
)

// Row is one measured figure: a distribution (n > 1: p50, p99, max) or a single value (n = 1).
type Row struct {
	Label    string  `json:"label"`    // what was measured: kuryr-pool, kuryr-noop, bridge, kuryr-agent, ...
	Scenario string  `json:"scenario"` // sequential-200, burst-50, startup-1000-ports, ...
	Op       string  `json:"op"`       // ADD, DEL, ready, rss, ...
	Unit     string  `json:"unit"`     // ms, requests, MiB, ports/s, s
	N        int     `json:"n"`
	P50      float64 `json:"p50"`
	P99      float64 `json:"p99"`
	Max      float64 `json:"max"`
	Errors   int     `json:"errors"`
	WallMs   float64 `json:"wall_ms,omitempty"`
	Note     string  `json:"note,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// latencyRow is a distribution of durations in milliseconds.
func latencyRow(label, scenario, op string, ds []time.Duration, errs int, wall time.Duration) Row {
	s := cnirun.Summarize(ds)
	return Row{Label: label, Scenario: scenario, Op: op, Unit: "ms", N: s.N, P50: ms(s.P50), P99: ms(s.P99), Max: ms(s.Max), Errors: errs, WallMs: ms(wall)}
}

// distRow is a distribution of plain values.
func distRow(label, scenario, op, unit string, vs []float64) Row {
	r := Row{Label: label, Scenario: scenario, Op: op, Unit: unit, N: len(vs)}
	if len(vs) == 0 {
		return r
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	q := func(p float64) float64 { return s[int(p*float64(len(s)-1)+0.5)] }
	r.P50, r.P99, r.Max = q(0.5), q(0.99), s[len(s)-1]
	return r
}

// valueRow is one value.
func valueRow(label, scenario, op, unit string, v float64, note string) Row {
	return Row{Label: label, Scenario: scenario, Op: op, Unit: unit, N: 1, P50: v, P99: v, Max: v, Note: note}
}

// appendRows adds rows to a JSON-lines file and prints them.
func appendRows(path string, rows ...Row) {
	for _, r := range rows {
		if r.N > 1 {
			fmt.Printf("%-14s %-22s %-16s n=%-4d p50=%10.2f p99=%10.2f max=%10.2f %-8s errors=%d %s\n", r.Label, r.Scenario, r.Op, r.N, r.P50, r.P99, r.Max, r.Unit, r.Errors, r.Note)
		} else {
			fmt.Printf("%-14s %-22s %-16s %10.2f %-8s %s\n", r.Label, r.Scenario, r.Op, r.P50, r.Unit, r.Note)
		}
	}
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			fail(err)
		}
	}
}

// usageRows summarises the kuryr-cni executions of one command: wall time and CPU of us, and the
// peak RSS of peak, executions through GNU time (the peak of us is not the plugin's own, see
// rusageExec); no peak row without them.
func usageRows(label, scenario, command string, us, peak []execUsage) []Row {
	if len(us) == 0 {
		return nil
	}
	var wall []time.Duration
	var cpu, rss []float64
	for _, u := range us {
		wall = append(wall, u.Wall)
		cpu = append(cpu, ms(u.User+u.Sys))
	}
	rows := []Row{
		latencyRow(label, scenario, command+" exec wall", wall, 0, 0),
		distRow(label, scenario, command+" exec cpu", "ms", cpu),
	}
	for _, u := range peak {
		rss = append(rss, float64(u.MaxRSSKiB)/1024)
	}
	if len(rss) > 0 {
		r := distRow(label, scenario, command+" exec maxrss", "MiB", rss)
		r.Note = fmt.Sprintf("%d executions through GNU time", len(rss))
		rows = append(rows, r)
	}
	return rows
}
