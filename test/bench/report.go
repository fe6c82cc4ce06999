package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// report prints the rows of a JSON-lines file as one table, each kuryr row with its ratio to the
// floor (the reference bridge plugin) and to noop mode for the same scenario and operation.
func report(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var rows []Row
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rows = append(rows, r)
	}
	find := func(label, scenario, op string) *Row {
		for i := range rows {
			if rows[i].Label == label && rows[i].Scenario == scenario && rows[i].Op == op {
				return &rows[i]
			}
		}
		return nil
	}
	ratio := func(a, b float64) string {
		if b <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	fmt.Fprintf(w, "%-14s %-15s %-4s %5s %10s %10s %10s %6s %14s %14s %12s\n",
		"plugin", "scenario", "op", "n", "p50 ms", "p99 ms", "max ms", "errors", "p50 vs bridge", "p99 vs bridge", "noop/pool p50")
	fmt.Fprintln(w, strings.Repeat("-", 126))
	for _, r := range rows {
		vsBridge, vsBridge99, vsNoop := "-", "-", "-"
		if r.Label != "bridge" {
			if b := find("bridge", r.Scenario, r.Op); b != nil {
				vsBridge, vsBridge99 = ratio(r.P50ms, b.P50ms), ratio(r.P99ms, b.P99ms)
			}
		}
		if r.Label == "kuryr-pool" {
			// noop runs fewer pods (each costs a Neutron create): compare per kind of scenario.
			kind, _, _ := strings.Cut(r.Scenario, "-")
			for i := range rows {
				n := &rows[i]
				if nk, _, _ := strings.Cut(n.Scenario, "-"); n.Label == "kuryr-noop" && nk == kind && n.Op == r.Op {
					vsNoop = ratio(n.P50ms, r.P50ms)
					break
				}
			}
		}
		fmt.Fprintf(w, "%-14s %-15s %-4s %5d %10.2f %10.2f %10.2f %6d %14s %14s %12s\n",
			r.Label, r.Scenario, r.Op, r.N, r.P50ms, r.P99ms, r.Maxms, r.Errors, vsBridge, vsBridge99, vsNoop)
	}
	return sc.Err()
}
