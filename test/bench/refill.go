package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
)

// runRefill: how fast a bare-metal agent fills an empty pool of e.refillPool ports, and refills it
// after as many ADDs drain it (sustained demand: every port taken is one to create).
func runRefill(ctx context.Context, e *benchEnv) error {
	fx, c, err := e.neutron(ctx, e.fixture)
	if err != nil {
		return err
	}
	if !slices.Contains(fx.BareMetalHosts, e.host) {
		return fmt.Errorf("host %s has no emulated L2 agent in %s (hack/neutron-up.sh BM_HOSTS)", e.host, e.fixture)
	}
	if err := clearHost(ctx, c, e.host); err != nil {
		return err
	}
	defer func() {
		if err := clearHost(context.WithoutCancel(ctx), c, e.host); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	return refillRows(ctx, e, fx)
}

func refillRows(ctx context.Context, e *benchEnv, fx fakeneutron.Fixture) error {
	n := e.refillPool
	a, err := startAgent(e, agentConf{name: "refill", node: e.host, fx: fx, ovsdb: e.ovsdb, cluster: benchCluster, min: n, batch: e.batch})
	if err != nil {
		return err
	}
	defer a.stop()
	if _, err := a.waitReady(5 * time.Minute); err != nil {
		return err
	}
	start := time.Now()
	full := func() (bool, error) {
		s, err := a.scrape()
		return err == nil && s.free >= float64(n), err
	}
	if err := waitFor(15*time.Minute, fmt.Sprintf("a pool of %d", n), full); err != nil {
		return err
	}
	fill := time.Since(start)
	s0, err := a.scrape()
	if err != nil {
		return err
	}
	scenario := fmt.Sprintf("pool-%d-batch-%d", n, e.batch)
	rows := []Row{
		valueRow("kuryr-agent", scenario, "fill empty pool", "s", fill.Seconds(), fmt.Sprintf("%g ports created", s0.created)),
		valueRow("kuryr-agent", scenario, "fill rate", "ports/s", s0.created/fill.Seconds(), createNote(s0.requests, s0.latency)),
	}

	// Drain: n pods take every port; the agent refills behind them.
	conflist, err := os.ReadFile(a.conflst)
	if err != nil {
		return err
	}
	r, _, err := newRunner(conflist, a.dir+"/cni-cache", e.binDir)
	if err != nil {
		return err
	}
	pods := newPods(n, "drain")
	defer closeAll(pods)
	start = time.Now()
	adds, errs, drainWall := burstPhase(ctx, pods, r.Add)
	if err := waitFor(15*time.Minute, fmt.Sprintf("the pool of %d to refill", n), full); err != nil {
		return err
	}
	refill := time.Since(start)
	s1, err := a.scrape()
	if err != nil {
		return err
	}
	created := s1.created - s0.created
	drain := latencyRow("kuryr-pool", fmt.Sprintf("drain-%d", n), "ADD", adds, errs, drainWall)
	drain.Note = "burst of ADDs that empties the pool (OVS plug)"
	rows = append(rows, drain,
		valueRow("kuryr-agent", scenario, "drain and refill", "s", refill.Seconds(), fmt.Sprintf("from the first ADD until %d ports are free again; drain %.1f s", n, drainWall.Seconds())),
		valueRow("kuryr-agent", scenario, "refill rate", "ports/s", created/refill.Seconds(), fmt.Sprintf("%g ports created; %s", created, createNote(sub(s1.requests, s0.requests), sub(s1.latency, s0.latency)))))
	if _, errs, _ := burstPhase(ctx, pods, r.Del); errs > 0 {
		fmt.Fprintf(os.Stderr, "%d DELs failed\n", errs)
	}
	appendRows(e.out, rows...)
	return nil
}

// createNote says what Neutron's bulk creates cost: the refill rate is batch size over that.
func createNote(requests, latency map[string]float64) string {
	n := requests["ports.bulk_create"]
	if n == 0 {
		return opsString(requests)
	}
	return fmt.Sprintf("Neutron bulk create %.2f s per batch; requests %s", latency["ports.bulk_create"]/n, opsString(requests))
}
