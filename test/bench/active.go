package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kuryr-pools/kuryr/neutron"
)

// runActive measures, with a real neutron-openvswitch-agent binding the ports (hack/l2-agent-up.sh),
// how long a pod waits until its port is ACTIVE: from the start of its CNI ADD until Neutron shows
// the port ACTIVE, split into the ADD itself and the L2 agent's wiring after the plug. Pool mode
// takes a pre-created, already bound port; noop creates (and binds) one per pod.
func runActive(ctx context.Context, e *benchEnv) error {
	if e.activeFixture == "" {
		return fmt.Errorf("-active-fixture is required")
	}
	fx, c, err := e.neutron(ctx, e.activeFixture)
	if err != nil {
		return err
	}
	var extra struct {
		OVSDB string `json:"ovsdb"`
	}
	if data, err := os.ReadFile(e.activeFixture); err == nil {
		_ = json.Unmarshal(data, &extra)
	}
	if len(fx.BareMetalHosts) == 0 {
		return fmt.Errorf("%s names no host with an L2 agent", e.activeFixture)
	}
	host := fx.BareMetalHosts[0]
	if err := clearHost(ctx, c, host); err != nil {
		return err
	}
	defer func() {
		if err := clearHost(context.WithoutCancel(ctx), c, host); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	for _, mode := range []string{"pool", "noop"} {
		// Each mode from no port: a noop agent would otherwise delete the pool's ports at start.
		if err := clearHost(ctx, c, host); err != nil {
			return err
		}
		if err := activeRows(ctx, e, c, fx.Endpoint, host, extra.OVSDB, mode, func(conf *agentConf) { conf.fx = fx }); err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
	}
	return nil
}

func activeRows(ctx context.Context, e *benchEnv, c *neutron.Client, endpoint, host, ovsdb, mode string, set func(*agentConf)) error {
	n := e.activePods
	conf := agentConf{name: "active-" + mode, node: host, ovsdb: ovsdb, cluster: benchCluster, endpoint: endpoint}
	set(&conf)
	if mode == "pool" {
		conf.min, conf.batch = n, n
	} else {
		conf.driver = "noop"
	}
	a, err := startAgent(e, conf)
	if err != nil {
		return err
	}
	defer a.stop()
	if _, err := a.waitReady(5 * time.Minute); err != nil {
		return err
	}
	if mode == "pool" {
		if err := waitFor(10*time.Minute, fmt.Sprintf("a pool of %d", n), func() (bool, error) {
			s, err := a.scrape()
			return err == nil && s.free >= float64(n), err
		}); err != nil {
			return err
		}
	}
	conflist, err := os.ReadFile(a.conflst)
	if err != nil {
		return err
	}
	r, _, err := newRunner(conflist, filepath.Join(a.dir, "cni-cache"), e.binDir)
	if err != nil {
		return err
	}
	pods := newPods(n, "active-"+mode)
	defer closeAll(pods)
	before, err := a.scrape()
	if err != nil {
		return err
	}
	var adds, wiring, totals []time.Duration
	for _, p := range pods {
		start := time.Now()
		d, err := r.Add(ctx, p)
		if err != nil {
			return err
		}
		portID, err := checkpointPort(filepath.Join(a.dir, "checkpoint.json"), p.ContainerID)
		if err != nil {
			return err
		}
		plugged := time.Now()
		if err := waitFor(2*time.Minute, "port "+portID+" ACTIVE", func() (bool, error) {
			port, err := c.GetPort(ctx, portID)
			return err == nil && port.Status == "ACTIVE", err
		}); err != nil {
			return err
		}
		active := time.Now()
		adds = append(adds, d)
		wiring = append(wiring, active.Sub(plugged))
		totals = append(totals, active.Sub(start))
	}
	after, err := a.scrape()
	if err != nil {
		return err
	}
	label := "kuryr-" + mode
	scenario := fmt.Sprintf("active-%d", n)
	rowAdd := latencyRow(label, scenario, "ADD", adds, 0, 0)
	rowAdd.Note = "CNI ADD through kuryr-cni (OVS plug)"
	if mode == "noop" {
		reqs := sub(after.requests, before.requests)
		lat := sub(after.latency, before.latency)
		rowAdd.Note = fmt.Sprintf("of which the port create (and bind) %.0f ms per pod; requests %s", lat["ports.bulk_create"]*1000/float64(n), opsString(reqs))
	}
	rowWire := latencyRow(label, scenario, "plugged->ACTIVE", wiring, 0, 0)
	rowWire.Note = "the L2 agent wires the OVS port and reports it up; polled every 50 ms"
	rowTotal := latencyRow(label, scenario, "ADD->ACTIVE", totals, 0, 0)
	rowTotal.Note = "what the pod waits for until its network works"
	appendRows(e.out, rowAdd, rowWire, rowTotal)
	if _, errs, _ := sequentialPhase(ctx, pods, r.Del); errs > 0 {
		return fmt.Errorf("%d DELs failed", errs)
	}
	return nil
}

// checkpointPort reads the port the agent gave a container from its checkpoint.
func checkpointPort(path, containerID string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var f struct {
		Attachments []struct {
			ContainerID string `json:"containerId"`
			Port        struct {
				ID string `json:"id"`
			} `json:"port"`
		} `json:"attachments"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return "", err
	}
	for _, a := range f.Attachments {
		if a.ContainerID == containerID {
			return a.Port.ID, nil
		}
	}
	return "", fmt.Errorf("container %s not in the checkpoint %s", containerID, path)
}
