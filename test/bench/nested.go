package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kuryr-pools/kuryr/neutron"
)

// runNested counts the Neutron requests of a nested agent's refill batches on a trunk of its own:
// kuryr's design is one bulk create and one add_subports per batch.
func runNested(ctx context.Context, e *benchEnv) error {
	fx, c, err := e.neutron(ctx, e.fixture)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("kuryr-bench-vm-%d", time.Now().UnixNano()%1000000)
	parents, err := c.CreatePorts(ctx, []neutron.PortSpec{{NetworkID: fx.WorkerNetwork, ProjectID: fx.Project, SubnetIDs: []string{fx.WorkerSubnet}, Name: name}})
	if err != nil {
		return err
	}
	tr, err := c.CreateTrunk(ctx, name, parents[0].ID, fx.Project)
	if err != nil {
		c.DeletePorts(ctx, []string{parents[0].ID})
		return err
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		if cur, err := c.GetTrunk(ctx, tr.ID); err == nil && len(cur.SubPorts) > 0 {
			var ids []string
			for _, s := range cur.SubPorts {
				ids = append(ids, s.PortID)
			}
			_ = c.RemoveSubports(ctx, tr.ID, ids)
			c.DeletePorts(ctx, ids)
		}
		_ = c.DeleteTrunk(ctx, tr.ID)
		c.DeletePorts(ctx, []string{parents[0].ID})
	}()
	ip := parents[0].FixedIPs[0].IPAddress
	want := e.batch * e.batches
	a, err := startAgent(e, agentConf{name: "nested", node: name, nodeIP: ip, driver: "nested", podVIF: "nested-vlan", fx: fx,
		cluster: benchCluster, min: want, batch: e.batch,
		extra: fmt.Sprintf("[pod_vif_nested]\nworker_nodes_subnets = %s\n[binding]\nlink_iface = lo\n", fx.WorkerSubnet)})
	if err != nil {
		return err
	}
	defer a.stop()
	if _, err := a.waitReady(5 * time.Minute); err != nil {
		return err
	}
	s0, err := a.scrape()
	if err != nil {
		return err
	}
	if err := waitFor(15*time.Minute, fmt.Sprintf("%d subports", want), func() (bool, error) {
		s, err := a.scrape()
		return err == nil && s.created-s0.created >= float64(want) && s.inFlight == 0, err
	}); err != nil {
		return err
	}
	time.Sleep(time.Second)
	s1, err := a.scrape()
	if err != nil {
		return err
	}
	window := sub(s1.requests, s0.requests)
	// The refills' own requests: a bulk create and an add_subports per batch, plus what a batch
	// needs only on trouble (trunk re-read on a VLAN clash, detach and delete of a failed batch).
	// The rest of the window is not per batch: the bulk-tag extension check of the process's first
	// create, and the periodic resync (the parent port and one listing) when one falls inside.
	refill, other := map[string]float64{}, map[string]float64{}
	for op, n := range window {
		switch op {
		case "ports.bulk_create", "trunks.add_subports", "trunks.get", "trunks.remove_subports", "ports.delete":
			refill[op] = n
		default:
			other[op] = n
		}
	}
	batches := (s1.created - s0.created) / float64(e.batch)
	cur, err := c.GetTrunk(ctx, tr.ID)
	if err != nil {
		return err
	}
	if len(cur.SubPorts) != want {
		return fmt.Errorf("trunk %s has %d subports, want %d", tr.ID, len(cur.SubPorts), want)
	}
	appendRows(e.out,
		valueRow("kuryr-agent", "nested-refill", "requests/batch", "requests", total(refill)/batches,
			fmt.Sprintf("%g batches of %d; %s; not per batch: %s", batches, e.batch, opsString(refill), opsString(other))),
		valueRow("kuryr-agent", "nested-startup", "neutron requests", "requests", total(s0.requests), opsString(s0.requests)))
	return nil
}
