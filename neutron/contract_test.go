package neutron_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/pool"
)

// The contract suite: what the adapter relies on from Neutron, run against the in-memory stand-in
// (always) and against the real neutron-server named by KURYR_TEST_NEUTRON. A stand-in that fails
// it is a defect.

func TestContractFake(t *testing.T) { runContract(t, fakeTarget(t)) }

func TestContractReal(t *testing.T) { runContract(t, realTarget(t)) }

// contractStats collects the requests of every client of one run, for the log at the end.
type contractStats struct {
	mu  sync.Mutex
	all neutron.Stats
}

func (s *contractStats) add(st neutron.Stats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.all == nil {
		s.all = neutron.Stats{}
	}
	for op, o := range st {
		a := s.all[op]
		a.Count += o.Count
		a.Errors += o.Errors
		a.TotalLatency += o.TotalLatency
		a.MaxLatency = max(a.MaxLatency, o.MaxLatency)
		a.LimiterWait += o.LimiterWait
		s.all[op] = a
	}
}

func runContract(t *testing.T, tg target) {
	stats := &contractStats{}
	tests := []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"BulkCreateTagsAndFilters", testBulkCreateTagsAndFilters},
		{"BulkCreateIsAtomic", testBulkCreateIsAtomic},
		{"Pagination", testPagination},
		{"TrunkDetailsAndAddSubports", testTrunkDetailsAndAddSubports},
		{"VLANClashLeavesTrunkUnchanged", testVLANClash},
		{"AttachRetriesOnClash", testAttachRetriesOnClash},
		{"RemoveSubports", testRemoveSubports},
		{"IfMatchConflict", testIfMatch},
		{"DeleteNotFoundAndSubport", testDelete},
		{"SubnetAndNetworkDetails", testSubnetDetails},
		{"NestedCreateListDelete", testNestedCreateListDelete},
		{"NestedCreateAllOrNothing", testNestedAllOrNothing},
		{"NestedListPreCreated", testNestedListPreCreated},
		{"NestedRefillBatchIsTwoRequests", testNestedRefillRequests},
		{"ListPortsRequestCountIsConstant", testListPortsConstant},
		{"BareMetal", testBareMetal},
		{"BareMetalBindingFailureLeavesNothing", testBareMetalBindingFailure},
		{"BackendUpdates", testBackendUpdates},
		{"OverQuota", testOverQuota},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tg)
			t.Cleanup(func() { stats.add(e.c.Stats()); stats.add(e.plain.Stats()) })
			tc.run(t, e)
		})
	}
	t.Logf("Neutron requests and latency per operation (%s server, all clients of the suite):\n%s", tg.name, stats.all)
}

func testBulkCreateTagsAndFilters(t *testing.T, e *env) {
	specs := append(e.specs(3, "node-a"), e.specs(2, "node-b")...)
	specs[4].HostID = e.fx.BareMetalHosts[0]
	specs[4].DeviceOwner = "compute:ct-other"
	before := e.c.Stats()
	ps, err := e.c.CreatePorts(e.ctx, specs)
	if err != nil {
		t.Fatalf("CreatePorts: %v", err)
	}
	if got := e.c.Stats().Sub(before)["ports.bulk_create"].Count; got != 1 {
		t.Errorf("bulk create of 5 ports took %d POST requests, want 1", got)
	}
	if len(ps) != 5 {
		t.Fatalf("got %d ports, want 5", len(ps))
	}
	for i, p := range ps {
		if !p.HasTags(specs[i].Tags...) {
			t.Errorf("port %d %s: tags %v, want %v set at creation", i, p.ID, p.Tags, specs[i].Tags)
		}
		if p.Name != pool.AvailablePortName || p.NetworkID != e.fx.PodNetwork || p.ProjectID != e.fx.Project {
			t.Errorf("port %d: name %q network %q project %q", i, p.Name, p.NetworkID, p.ProjectID)
		}
		if p.MACAddress == "" || len(p.FixedIPs) != 1 || p.FixedIPs[0].SubnetID != e.fx.PodSubnet {
			t.Errorf("port %d: MAC %q fixed IPs %v", i, p.MACAddress, p.FixedIPs)
		}
		if len(p.SecurityGroups) == 0 {
			t.Errorf("port %d: no security group (want the project's default)", i)
		}
	}
	// Each port has its own MAC and IP.
	macs, ips := map[string]bool{}, map[string]bool{}
	for _, p := range ps {
		macs[p.MACAddress], ips[p.FixedIPs[0].IPAddress] = true, true
	}
	if len(macs) != 5 || len(ips) != 5 {
		t.Errorf("%d distinct MACs and %d distinct IPs for 5 ports", len(macs), len(ips))
	}
	// The tags are stored, not only echoed: read back.
	got, err := e.c.GetPort(e.ctx, ps[0].ID)
	if err != nil || !got.HasTags(specs[0].Tags...) {
		t.Errorf("GetPort: tags %v err %v", got.Tags, err)
	}

	cases := []struct {
		name string
		f    neutron.PortFilter
		want []string
	}{
		{"tags all of", neutron.PortFilter{Tags: []string{e.clusterTag(), neutron.NodeTag("node-a")}}, portIDs(ps[:3])},
		{"tags of another node", neutron.PortFilter{Tags: []string{e.clusterTag(), neutron.NodeTag("node-b")}}, portIDs(ps[3:])},
		{"tag nobody has", neutron.PortFilter{Tags: []string{e.clusterTag(), "ct-none"}}, nil},
		{"device_owner", neutron.PortFilter{Tags: []string{e.clusterTag()}, DeviceOwners: []string{pool.DeviceOwnerKuryr}}, portIDs(ps[:4])},
		{"device_owner any of", neutron.PortFilter{Tags: []string{e.clusterTag()}, DeviceOwners: []string{pool.DeviceOwnerSubport, "compute:ct-other"}}, portIDs(ps[4:])},
		{"binding:host_id", neutron.PortFilter{Tags: []string{e.clusterTag()}, HostID: e.fx.BareMetalHosts[0]}, portIDs(ps[4:])},
		{"project and network", neutron.PortFilter{Tags: []string{e.clusterTag()}, ProjectID: e.fx.Project, NetworkID: e.fx.PodNetwork}, portIDs(ps)},
		{"fixed_ips ip_address", neutron.PortFilter{FixedIP: ps[2].FixedIPs[0].IPAddress, NetworkID: e.fx.PodNetwork}, portIDs(ps[2:3])},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := e.c.ListPorts(e.ctx, c.f)
			if err != nil {
				t.Fatalf("ListPorts: %v", err)
			}
			if !slices.Equal(portIDs(got), sortedCopy(c.want)) {
				t.Errorf("got %v, want %v", portIDs(got), sortedCopy(c.want))
			}
		})
	}
}

func testBulkCreateIsAtomic(t *testing.T, e *env) {
	specs := e.specs(3, "node-a")
	specs[1].SubnetIDs = []string{"00000000-0000-4000-8000-000000000000"} // no such subnet
	if _, err := e.c.CreatePorts(e.ctx, specs); err == nil {
		t.Fatal("bulk create with an invalid body succeeded")
	}
	if left := e.tagged(); len(left) != 0 {
		t.Errorf("a failed bulk create left %d ports: %v", len(left), portIDs(left))
	}
	specs = e.specs(2, "node-a")
	specs[1].SecurityGroups = []string{"00000000-0000-4000-8000-000000000001"} // no such SG
	if _, err := e.c.CreatePorts(e.ctx, specs); err == nil {
		t.Fatal("bulk create with an unknown security group succeeded")
	}
	if left := e.tagged(); len(left) != 0 {
		t.Errorf("a failed bulk create left %d ports", len(left))
	}
}

func testPagination(t *testing.T, e *env) {
	ps := e.create(e.specs(7, "node-a"))
	before := e.c.Stats()
	got, err := e.c.ListPorts(e.ctx, neutron.PortFilter{Tags: []string{e.clusterTag()}, PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(portIDs(got), portIDs(ps)) {
		t.Errorf("paginated list: got %v, want %v", portIDs(got), portIDs(ps))
	}
	// 7 ports by 2: four full or partial pages (a server may answer a last, empty one).
	if n := e.c.Stats().Sub(before)["ports.list"].Count; n < 4 || n > 5 {
		t.Errorf("listing 7 ports by pages of 2 took %d requests, want 4 (or 5)", n)
	}
	// Without a page size (list_page_size 0, the default) a listing is one request.
	before = e.c.Stats()
	got, err = e.c.ListPorts(e.ctx, neutron.PortFilter{Tags: []string{e.clusterTag()}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(portIDs(got), portIDs(ps)) {
		t.Errorf("unpaginated list: got %v, want %v", portIDs(got), portIDs(ps))
	}
	if n := e.c.Stats().Sub(before)["ports.list"].Count; n != 1 {
		t.Errorf("listing 7 ports without a page size took %d requests, want 1", n)
	}
}

func testTrunkDetailsAndAddSubports(t *testing.T, e *env) {
	v := e.newVM()
	if v.parent.TrunkDetails == nil {
		p, err := e.c.GetPort(e.ctx, v.parent.ID)
		if err != nil {
			t.Fatal(err)
		}
		v.parent = p
	}
	if v.parent.TrunkDetails == nil || v.parent.TrunkDetails.TrunkID != v.trunk.ID {
		t.Fatalf("parent trunk_details %+v, want trunk %s", v.parent.TrunkDetails, v.trunk.ID)
	}
	ps := e.create(e.specs(3, "node-a"))
	subs := []neutron.Subport{{PortID: ps[0].ID, SegmentationID: 10}, {PortID: ps[1].ID, SegmentationID: 11}, {PortID: ps[2].ID, SegmentationID: 4094}}
	before := e.c.Stats()
	tr, err := e.c.AddSubports(e.ctx, v.trunk.ID, subs)
	if err != nil {
		t.Fatalf("AddSubports: %v", err)
	}
	if n := e.c.Stats().Sub(before).Requests(); n != 1 {
		t.Errorf("add_subports of 3 took %d requests, want 1", n)
	}
	if len(tr.SubPorts) != 3 {
		t.Errorf("add_subports answered a trunk with %d subports, want 3", len(tr.SubPorts))
	}
	parent, err := e.c.GetPort(e.ctx, v.parent.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{ps[0].ID: 10, ps[1].ID: 11, ps[2].ID: 4094}
	got := map[string]int{}
	for _, s := range parent.TrunkDetails.SubPorts {
		got[s.PortID] = s.SegmentationID
		if s.MACAddress == "" {
			t.Errorf("trunk_details subport %s has no mac_address", s.PortID)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("trunk_details subports %v, want %v", got, want)
	}
	if fmt.Sprint(e.trunkSubports(v.trunk.ID)) != fmt.Sprint(want) {
		t.Errorf("trunk subports %v, want %v", e.trunkSubports(v.trunk.ID), want)
	}
	// ML2/OVS rewrites the owner to trunk:subport once an agent binds the parent; without an agent
	// it stays. Both are valid, nothing else is.
	for _, id := range portIDs(ps) {
		p, err := e.c.GetPort(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if p.DeviceOwner != pool.DeviceOwnerKuryr && p.DeviceOwner != pool.DeviceOwnerSubport {
			t.Errorf("attached port %s has device_owner %q", id, p.DeviceOwner)
		}
	}
	// Out of range segmentation IDs are refused.
	extra := e.create(e.specs(1, "node-a"))
	if _, err := e.c.AddSubports(e.ctx, v.trunk.ID, []neutron.Subport{{PortID: extra[0].ID, SegmentationID: 4095}}); err == nil {
		t.Error("add_subports with VLAN 4095 succeeded")
	}
}

func testVLANClash(t *testing.T, e *env) {
	v := e.newVM()
	ps := e.create(e.specs(3, "node-a"))
	if _, err := e.c.AddSubports(e.ctx, v.trunk.ID, []neutron.Subport{{PortID: ps[0].ID, SegmentationID: 20}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{ps[0].ID: 20}
	_, err := e.c.AddSubports(e.ctx, v.trunk.ID, []neutron.Subport{{PortID: ps[1].ID, SegmentationID: 21}, {PortID: ps[2].ID, SegmentationID: 20}})
	wantErrIs(t, err, neutron.ErrConflict, "batch with a clashing VLAN")
	if got := e.trunkSubports(v.trunk.ID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after a refused batch the trunk has %v, want %v (all or nothing)", got, want)
	}
	// A port that is already a subport is refused too, whatever its VLAN.
	_, err = e.c.AddSubports(e.ctx, v.trunk.ID, []neutron.Subport{{PortID: ps[1].ID, SegmentationID: 22}, {PortID: ps[0].ID, SegmentationID: 23}})
	wantErrIs(t, err, neutron.ErrConflict, "batch with a port already a subport")
	if got := e.trunkSubports(v.trunk.ID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after a refused batch the trunk has %v, want %v", got, want)
	}
}

func testAttachRetriesOnClash(t *testing.T, e *env) {
	v := e.newVM()
	intruder := e.create(e.specs(1, "intruder"))[0]
	ps := e.create(e.specs(4, "node-a"))
	injected := 0
	neutron.SetBeforeAddSubports(e.c, func(ctx context.Context, trunkID string, subs []neutron.Subport, attempt int) {
		if attempt != 1 {
			return
		}
		// Behind the adapter's back: take the VLAN it has just chosen for its third port.
		if _, err := e.plain.AddSubports(ctx, trunkID, []neutron.Subport{{PortID: intruder.ID, SegmentationID: subs[2].SegmentationID}}); err != nil {
			t.Errorf("inject subport: %v", err)
		}
		injected++
	})
	before := e.c.Stats()
	subs, err := e.c.AttachPorts(e.ctx, v.trunk.ID, portIDs(ps), 5)
	if err != nil {
		t.Fatalf("AttachPorts after a clash: %v", err)
	}
	if injected != 1 {
		t.Fatalf("hook ran %d times", injected)
	}
	if n := e.c.Stats().Sub(before)["trunks.add_subports"]; n.Count != 2 || n.Errors != 1 {
		t.Errorf("add_subports: %d requests, %d failed; want 2 and 1 (one clash, one retry)", n.Count, n.Errors)
	}
	got := e.trunkSubports(v.trunk.ID)
	if len(got) != 5 {
		t.Errorf("trunk has %d subports, want 4 + the intruder: %v", len(got), got)
	}
	seen := map[int]string{}
	for id, vlan := range got {
		if other, dup := seen[vlan]; dup {
			t.Errorf("VLAN %d used by %s and %s", vlan, other, id)
		}
		seen[vlan] = id
	}
	for i, s := range subs {
		if got[s.PortID] != s.SegmentationID || s.PortID != portIDs(ps)[i] {
			t.Errorf("subport %d: %+v, trunk says VLAN %d", i, s, got[s.PortID])
		}
	}
	if n := len(e.tagged()); n != 5 {
		t.Errorf("%d ports exist, want 5 (nothing leaked or lost)", n)
	}

	// A clash on every attempt: the backend gives up and leaves no port behind.
	b, err := neutron.NewNestedBackend(e.c, neutron.NestedOptions{NodeIP: v.ip, WorkerSubnets: []string{e.fx.WorkerSubnet},
		ClusterName: e.cluster, NodeName: "node-b", AttachRetries: 2})
	if err != nil {
		t.Fatal(err)
	}
	spare := e.create(e.specs(2, "intruder"))
	neutron.SetBeforeAddSubports(e.c, func(ctx context.Context, trunkID string, subs []neutron.Subport, attempt int) {
		if _, err := e.plain.AddSubports(ctx, trunkID, []neutron.Subport{{PortID: spare[attempt-1].ID, SegmentationID: subs[0].SegmentationID}}); err != nil {
			t.Errorf("inject subport %d: %v", attempt, err)
		}
	})
	_, err = b.CreatePorts(e.ctx, pool.CreateRequest{Key: pool.Key{Node: v.ip, Project: e.fx.Project, Network: e.fx.PodNetwork},
		SubnetIDs: []string{e.fx.PodSubnet}, Count: 3})
	wantErrIs(t, err, neutron.ErrConflict, "CreatePorts with a clash on every attempt")
	if left := e.tagged(neutron.NodeTag("node-b")); len(left) != 0 {
		t.Errorf("failed CreatePorts left %d ports: %v", len(left), portIDs(left))
	}
	if n := len(e.trunkSubports(v.trunk.ID)); n != 7 {
		t.Errorf("trunk has %d subports, want 7 (5 + 2 injected)", n)
	}
}

func testRemoveSubports(t *testing.T, e *env) {
	v := e.newVM()
	ps := e.create(e.specs(4, "node-a"))
	if _, err := e.c.AttachPorts(e.ctx, v.trunk.ID, portIDs(ps[:3]), 0); err != nil {
		t.Fatal(err)
	}
	// Duplicates are sent once; Neutron would refuse them.
	if err := e.c.RemoveSubports(e.ctx, v.trunk.ID, []string{ps[0].ID, ps[1].ID, ps[0].ID}); err != nil {
		t.Fatalf("RemoveSubports with a duplicate: %v", err)
	}
	if got := e.trunkSubports(v.trunk.ID); len(got) != 1 || got[ps[2].ID] == 0 {
		t.Errorf("after removing 2 of 3 the trunk has %v", got)
	}
	// One port that is not a subport: nothing to do.
	if err := e.c.RemoveSubports(e.ctx, v.trunk.ID, []string{ps[3].ID}); err != nil {
		t.Errorf("RemoveSubports of a port that is not a subport: %v", err)
	}
	// Several, one of them not a subport: Neutron refuses the whole call.
	err := e.c.RemoveSubports(e.ctx, v.trunk.ID, []string{ps[2].ID, ps[3].ID})
	wantErrIs(t, err, neutron.ErrNotFound, "RemoveSubports of two, one not attached")
	if got := e.trunkSubports(v.trunk.ID); len(got) != 1 {
		t.Errorf("a refused remove_subports changed the trunk: %v", got)
	}
}

func testIfMatch(t *testing.T, e *env) {
	p := e.create(e.specs(1, "node-a"))[0]
	cur, err := e.c.GetPort(e.ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	name := "ns/pod-a"
	upd, err := e.c.UpdatePort(e.ctx, p.ID, cur.RevisionNumber, neutron.PortUpdate{Name: &name})
	if err != nil {
		t.Fatalf("update at the current revision: %v", err)
	}
	if upd.Name != name || upd.RevisionNumber <= cur.RevisionNumber {
		t.Errorf("update answered name %q revision %d (was %d)", upd.Name, upd.RevisionNumber, cur.RevisionNumber)
	}
	sgs := []string{e.fx.SecurityGroups[len(e.fx.SecurityGroups)-1]}
	_, err = e.c.UpdatePort(e.ctx, p.ID, cur.RevisionNumber, neutron.PortUpdate{SecurityGroups: &sgs})
	wantErrIs(t, err, neutron.ErrRevisionMismatch, "update at a stale revision")
	after, err := e.c.GetPort(e.ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(after.SecurityGroups, sgs) && !slices.Equal(cur.SecurityGroups, sgs) {
		t.Error("a refused conditional update changed the security groups")
	}
	// Unconditional updates of the other attributes kuryr changes.
	dev, owner, host := "ct-pod-uid", pool.DeviceOwnerKuryr, e.fx.BareMetalHosts[1]
	upd, err = e.c.UpdatePort(e.ctx, p.ID, 0, neutron.PortUpdate{DeviceID: &dev, DeviceOwner: &owner, HostID: &host, SecurityGroups: &sgs})
	if err != nil {
		t.Fatal(err)
	}
	if upd.DeviceID != dev || upd.HostID != host || !slices.Equal(upd.SecurityGroups, sgs) {
		t.Errorf("update answered device_id %q host %q sgs %v", upd.DeviceID, upd.HostID, upd.SecurityGroups)
	}
}

func testDelete(t *testing.T, e *env) {
	ps := e.create(e.specs(2, "node-a"))
	if err := e.c.DeletePort(e.ctx, ps[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := e.c.DeletePort(e.ctx, ps[0].ID); err != nil {
		t.Errorf("deleting a deleted port: %v, want success", err)
	}
	_, err := e.c.GetPort(e.ctx, ps[0].ID)
	wantErrIs(t, err, neutron.ErrNotFound, "GetPort of a deleted port")
	// A subport: detached, then deleted.
	v := e.newVM()
	if _, err := e.c.AddSubports(e.ctx, v.trunk.ID, []neutron.Subport{{PortID: ps[1].ID, SegmentationID: 30}}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.DeletePort(e.ctx, ps[1].ID); err != nil {
		t.Fatalf("deleting a subport: %v", err)
	}
	if got := e.trunkSubports(v.trunk.ID); len(got) != 0 {
		t.Errorf("trunk still has %v", got)
	}
	if left := e.tagged(); len(left) != 0 {
		t.Errorf("ports left: %v", portIDs(left))
	}
	// Many at once, with one unknown.
	more := e.create(e.specs(6, "node-a"))
	failed := e.c.DeletePorts(e.ctx, append(portIDs(more), "00000000-0000-4000-8000-000000000002"))
	if len(failed) != 0 {
		t.Errorf("DeletePorts: %v", failed)
	}
	if left := e.tagged(); len(left) != 0 {
		t.Errorf("ports left: %v", portIDs(left))
	}
}

func testSubnetDetails(t *testing.T, e *env) {
	d, err := e.c.SubnetDetails(e.ctx, e.fx.PodSubnet)
	if err != nil {
		t.Fatal(err)
	}
	if d.CIDR != e.fx.PodSubnetCIDR || d.NetworkID != e.fx.PodNetwork || d.GatewayIP == "" || d.IPVersion != 4 || d.MTU <= 0 {
		t.Errorf("subnet details %+v", d)
	}
	before := e.c.Stats()
	if _, err := e.c.SubnetDetails(e.ctx, e.fx.PodSubnet); err != nil {
		t.Fatal(err)
	}
	if n := e.c.Stats().Sub(before).Requests(); n != 0 {
		t.Errorf("second SubnetDetails made %d requests, want 0 (cached)", n)
	}
	n, err := e.c.Network(e.ctx, e.fx.WorkerNetwork)
	if err != nil || n.ID != e.fx.WorkerNetwork || n.MTU <= 0 {
		t.Errorf("Network: %+v, %v", n, err)
	}
	_, err = e.c.Subnet(e.ctx, "00000000-0000-4000-8000-000000000003")
	wantErrIs(t, err, neutron.ErrNotFound, "unknown subnet")
}

func (e *env) nested(v vm, node string) *neutron.NestedBackend {
	e.t.Helper()
	b, err := neutron.NewNestedBackend(e.c, neutron.NestedOptions{NodeIP: v.ip, WorkerSubnets: []string{e.fx.WorkerSubnet},
		ClusterName: e.cluster, NodeName: node})
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) key(node string) pool.Key {
	return pool.Key{Node: node, Project: e.fx.Project, Network: e.fx.PodNetwork}
}

func testNestedCreateListDelete(t *testing.T, e *env) {
	v := e.newVM()
	b := e.nested(v, "node-a")
	sgs := pool.NewSGSet(e.fx.SecurityGroups...)
	// A pool with min 5 and batch 10 asks for max(batch, min - 0) = 10.
	ps, err := b.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(v.ip), SubnetIDs: []string{e.fx.PodSubnet}, SGs: sgs, Count: 10})
	if err != nil {
		t.Fatalf("CreatePorts: %v", err)
	}
	if len(ps) != 10 {
		t.Fatalf("got %d ports, want 10", len(ps))
	}
	onTrunk := e.trunkSubports(v.trunk.ID)
	vlans := map[int]bool{}
	for _, p := range ps {
		if p.Key != e.key(v.ip) || p.SGs != sgs || p.TrunkID != v.trunk.ID || p.MAC == "" || len(p.FixedIPs) != 1 {
			t.Errorf("port %+v", p)
		}
		if p.VLAN < 1 || p.VLAN > 4094 || vlans[p.VLAN] {
			t.Errorf("port %s: VLAN %d out of range or not unique", p.ID, p.VLAN)
		}
		vlans[p.VLAN] = true
		if onTrunk[p.ID] != p.VLAN {
			t.Errorf("port %s: VLAN %d, trunk says %d", p.ID, p.VLAN, onTrunk[p.ID])
		}
	}
	for _, p := range e.tagged(neutron.NodeTag("node-a")) {
		if p.Name != pool.AvailablePortName || !p.HasTags(e.clusterTag(), neutron.NodeTag("node-a")) {
			t.Errorf("port %s: name %q tags %v", p.ID, p.Name, p.Tags)
		}
	}
	listed, err := b.ListPorts(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 10 {
		t.Errorf("ListPorts: %d ports, want 10", len(listed))
	}
	for _, l := range listed {
		if !l.Attached || l.VLAN == 0 || l.TrunkID != v.trunk.ID || l.Key != e.key(v.ip) || l.Name != pool.AvailablePortName {
			t.Errorf("listed %+v", l)
		}
	}
	// Delete 4: detached then deleted.
	failed := b.DeletePorts(e.ctx, ps[:4])
	if len(failed) != 0 {
		t.Fatalf("DeletePorts: %v", failed)
	}
	if got := e.trunkSubports(v.trunk.ID); len(got) != 6 {
		t.Errorf("trunk has %d subports after deleting 4 of 10", len(got))
	}
	if n := len(e.tagged()); n != 6 {
		t.Errorf("%d ports exist, want 6", n)
	}
	// Deleting again: already gone counts as deleted.
	if failed := b.DeletePorts(e.ctx, ps[:4]); len(failed) != 0 {
		t.Errorf("second DeletePorts: %v", failed)
	}
}

func testNestedAllOrNothing(t *testing.T, e *env) {
	v := e.newVM()
	b := e.nested(v, "node-a")
	// add_subports fails for a reason that is not a VLAN clash: the trunk is gone.
	neutron.SetBeforeAddSubports(e.c, func(ctx context.Context, trunkID string, _ []neutron.Subport, _ int) {
		if err := e.plain.DeleteTrunk(ctx, trunkID); err != nil {
			t.Errorf("delete trunk behind the backend's back: %v", err)
		}
	})
	_, err := b.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(v.ip), SubnetIDs: []string{e.fx.PodSubnet}, Count: 5})
	if err == nil {
		t.Fatal("CreatePorts on a deleted trunk succeeded")
	}
	if left := e.tagged(neutron.NodeTag("node-a")); len(left) != 0 {
		t.Errorf("failed CreatePorts left %d ports", len(left))
	}
	// An invalid request creates nothing either.
	_, err = b.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(v.ip), SubnetIDs: []string{"00000000-0000-4000-8000-000000000004"}, Count: 3})
	if err == nil {
		t.Fatal("CreatePorts on an unknown subnet succeeded")
	}
	if left := e.tagged(neutron.NodeTag("node-a")); len(left) != 0 {
		t.Errorf("failed CreatePorts left %d ports", len(left))
	}
}

func testNestedListPreCreated(t *testing.T, e *env) {
	v := e.newVM()
	// An operator's script: plain ports with device_owner compute:kuryr and no kuryr tags, attached
	// to the node's trunk with VLANs of its choice.
	pre := make([]neutron.PortSpec, 3)
	for i := range pre {
		pre[i] = neutron.PortSpec{NetworkID: e.fx.PodNetwork, ProjectID: e.fx.Project, SubnetIDs: []string{e.fx.PodSubnet},
			Name: fmt.Sprintf("ct-pre-%s-%d", e.cluster, i), DeviceOwner: pool.DeviceOwnerKuryr}
	}
	preset, err := e.plain.CreatePorts(e.ctx, pre)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.plain.DeletePorts(context.Background(), portIDs(preset)) })
	if _, err := e.plain.AddSubports(e.ctx, v.trunk.ID, []neutron.Subport{
		{PortID: preset[0].ID, SegmentationID: 101}, {PortID: preset[1].ID, SegmentationID: 102}, {PortID: preset[2].ID, SegmentationID: 103}}); err != nil {
		t.Fatal(err)
	}
	// Tagged for this node but not attached (a crash between create and attach), and another
	// node's port.
	detached := e.create(e.specs(1, "node-a"))[0]
	other := e.create(e.specs(1, "node-z"))[0]

	b := e.nested(v, "node-a")
	listed, err := b.ListPorts(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]pool.ListedPort{}
	for _, l := range listed {
		got[l.ID] = l
	}
	for i, p := range preset {
		l, ok := got[p.ID]
		switch {
		case !ok:
			t.Errorf("pre-created port %s not listed", p.ID)
		case !l.Attached || l.VLAN != 101+i || l.TrunkID != v.trunk.ID || l.Key != e.key(v.ip) || l.MAC != p.MACAddress:
			t.Errorf("pre-created port listed as %+v", l)
		}
	}
	if l, ok := got[detached.ID]; !ok || l.Attached {
		t.Errorf("tagged but detached port: listed %v attached %v, want listed, not attached", ok, l.Attached)
	}
	if _, ok := got[other.ID]; ok {
		t.Error("another node's port was listed")
	}
	if len(got) != 4 {
		t.Errorf("listed %d ports, want 4", len(got))
	}
}

func testListPortsConstant(t *testing.T, e *env) {
	v := e.newVM()
	// A nested listing reads every kuryr port of the cluster (subports are not filtered by trunk):
	// resource_tags scope it to this test, as they scope the bare-metal listing (the host is shared).
	// They filter the parent port lookup too, and the VM's parent carries ct-vm-<cluster>.
	b, err := neutron.NewNestedBackend(e.c, neutron.NestedOptions{NodeIP: v.ip, WorkerSubnets: []string{e.fx.WorkerSubnet},
		ClusterName: e.cluster, NodeName: "node-a", ResourceTags: []string{"ct-vm-" + e.cluster}})
	if err != nil {
		t.Fatal(err)
	}
	bm, err := neutron.NewBareMetalBackend(e.c, neutron.BareMetalOptions{NodeName: e.fx.BareMetalHosts[0],
		ClusterName: e.cluster, ResourceTags: []string{"ct-rt-" + e.cluster}})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int][2]int{}
	have := 0
	for _, n := range []int{5, 50} {
		if _, err := b.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(v.ip), SubnetIDs: []string{e.fx.PodSubnet}, Count: n - have}); err != nil {
			t.Fatal(err)
		}
		if _, err := bm.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(bm.Node()), SubnetIDs: []string{e.fx.PodSubnet}, Count: n - have}); err != nil {
			t.Fatal(err)
		}
		have = n
		before := e.c.Stats()
		ln, err := b.ListPorts(e.ctx)
		mid := e.c.Stats()
		lb, err2 := bm.ListPorts(e.ctx)
		after := e.c.Stats()
		if err != nil || err2 != nil {
			t.Fatal(err, err2)
		}
		if len(ln) != n || len(lb) != n {
			t.Fatalf("listed %d nested and %d bare-metal ports, want %d", len(ln), len(lb), n)
		}
		counts[n] = [2]int{mid.Sub(before).Requests(), after.Sub(mid).Requests()}
	}
	if counts[5] != counts[50] {
		t.Errorf("ListPorts requests (nested, bare metal): %v for 5 ports, %v for 50: not constant", counts[5], counts[50])
	}
	if counts[50][0] > 2 || counts[50][1] > 1 {
		t.Errorf("ListPorts requests (nested, bare metal) %v, want at most (2, 1)", counts[50])
	}
	t.Logf("ListPorts requests (nested, bare metal): %v for 5 ports, %v for 50", counts[5], counts[50])
}

func testBareMetal(t *testing.T, e *env) {
	host := e.fx.BareMetalHosts[0] // has an L2 agent: bindings succeed
	b, err := neutron.NewBareMetalBackend(e.c, neutron.BareMetalOptions{NodeName: host, ClusterName: e.cluster})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := b.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(host), SubnetIDs: []string{e.fx.PodSubnet}, Count: 4,
		SGs: pool.NewSGSet(e.fx.SecurityGroups[0])})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.VIFType != "ovs" || p.VIFDetails.BridgeName != "br-int" || p.Key != e.key(host) || p.SGs != pool.NewSGSet(e.fx.SecurityGroups[0]) {
			t.Errorf("created %+v, want bound (vif_type ovs, bridge br-int)", p)
		}
	}
	for _, p := range e.tagged(neutron.NodeTag(host)) {
		if p.HostID != host || p.DeviceOwner != pool.DeviceOwnerKuryr || p.Name != pool.AvailablePortName {
			t.Errorf("port %s: host %q owner %q name %q", p.ID, p.HostID, p.DeviceOwner, p.Name)
		}
	}
	// Pre-created by an operator: bound to the host, no tags.
	pre, err := e.plain.CreatePorts(e.ctx, []neutron.PortSpec{{NetworkID: e.fx.PodNetwork, ProjectID: e.fx.Project,
		SubnetIDs: []string{e.fx.PodSubnet}, DeviceOwner: pool.DeviceOwnerKuryr, HostID: host, Name: "ct-pre-" + e.cluster}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.plain.DeletePorts(context.Background(), portIDs(pre)) })
	// Not ours: another host, and another owner on this host.
	elsewhere := e.specs(1, "elsewhere")
	elsewhere[0].HostID = e.fx.BareMetalHosts[1]
	foreign := e.specs(1, host)
	foreign[0].HostID, foreign[0].DeviceOwner = host, "compute:nova"
	foreignID := e.create(foreign)[0].ID
	notOurs := []string{e.create(elsewhere)[0].ID, foreignID}

	listed, err := b.ListPorts(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The host is shared with other runs, so check inclusion and exclusion, not equality.
	got := map[string]pool.ListedPort{}
	for _, l := range listed {
		got[l.ID] = l
		if !l.Attached || l.Key.Node != host || l.VLAN != 0 || l.DeviceOwner != pool.DeviceOwnerKuryr {
			t.Errorf("listed %+v", l)
		}
	}
	for _, id := range append(poolPortIDs(ps), pre[0].ID) {
		if l, ok := got[id]; !ok {
			t.Errorf("port %s not listed", id)
		} else if l.Key != e.key(host) {
			t.Errorf("port %s listed with key %v", id, l.Key)
		}
	}
	for _, id := range notOurs {
		if _, ok := got[id]; ok {
			t.Errorf("port %s of another host or owner listed", id)
		}
	}
	if failed := b.DeletePorts(e.ctx, ps); len(failed) != 0 {
		t.Fatal(failed)
	}
	if left := e.tagged(neutron.NodeTag(host)); len(left) != 1 || left[0].ID != foreignID {
		t.Errorf("%d ports left, want only the compute:nova one", len(left))
	}
}

func testBareMetalBindingFailure(t *testing.T, e *env) {
	// With no L2 agent on the host Neutron fails the binding (after 10 tries per port); kuryr then
	// deletes the batch. IgnoreBindingFailure keeps it.
	host := "ct-noagent-" + e.cluster
	b, err := neutron.NewBareMetalBackend(e.c, neutron.BareMetalOptions{NodeName: host, ClusterName: e.cluster})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(host), SubnetIDs: []string{e.fx.PodSubnet}, Count: 3})
	if err == nil || !has(err.Error(), "binding") {
		t.Fatalf("CreatePorts on a host without an agent: %v, want a binding failure", err)
	}
	if left := e.tagged(); len(left) != 0 {
		t.Errorf("a failed binding left %d ports", len(left))
	}
	keep, err := neutron.NewBareMetalBackend(e.c, neutron.BareMetalOptions{NodeName: host, ClusterName: e.cluster, IgnoreBindingFailure: true})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := keep.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(host), SubnetIDs: []string{e.fx.PodSubnet}, Count: 1})
	if err != nil || len(ps) != 1 || ps[0].VIFType != "binding_failed" {
		t.Errorf("with IgnoreBindingFailure: %v, %+v", err, ps)
	}
}

func testBackendUpdates(t *testing.T, e *env) {
	host := e.fx.BareMetalHosts[0]
	b, err := neutron.NewBareMetalBackend(e.c, neutron.BareMetalOptions{NodeName: host, ClusterName: e.cluster})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := b.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(host), SubnetIDs: []string{e.fx.PodSubnet}, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := ps[0]
	if err := b.MarkInUse(e.ctx, p, "default/pod-1", "uid-1"); err != nil {
		t.Fatal(err)
	}
	got, _ := e.plain.GetPort(e.ctx, p.ID)
	if got.Name != "default/pod-1" || got.DeviceID != "uid-1" {
		t.Errorf("after MarkInUse: name %q device_id %q", got.Name, got.DeviceID)
	}
	sgs := pool.NewSGSet(e.fx.SecurityGroups...)
	if err := b.UpdateSGs(e.ctx, p, sgs); err != nil {
		t.Fatal(err)
	}
	got, _ = e.plain.GetPort(e.ctx, p.ID)
	if pool.NewSGSet(got.SecurityGroups...) != sgs {
		t.Errorf("after UpdateSGs: %v, want %v", got.SecurityGroups, sgs)
	}
	if err := b.ResetPort(e.ctx, p); err != nil {
		t.Fatal(err)
	}
	got, _ = e.plain.GetPort(e.ctx, p.ID)
	if got.Name != pool.AvailablePortName || got.DeviceID != "" {
		t.Errorf("after ResetPort: name %q device_id %q", got.Name, got.DeviceID)
	}
	// On a port that is gone every update fails and says so.
	e.plain.DeletePorts(e.ctx, []string{p.ID})
	for name, err := range map[string]error{
		"MarkInUse": b.MarkInUse(e.ctx, p, "a/b", "c"),
		"UpdateSGs": b.UpdateSGs(e.ctx, p, sgs),
		"ResetPort": b.ResetPort(e.ctx, p),
	} {
		if err == nil || !has(err.Error(), p.ID) {
			t.Errorf("%s on a deleted port: %v, want an error naming the port", name, err)
		}
	}
	if err := b.ResetPort(e.ctx, p); !errors.Is(err, pool.ErrPortGone) {
		t.Errorf("ResetPort on a deleted port: %v, want pool.ErrPortGone (the pools forget it)", err)
	}
}

// testOverQuota: a bulk create past the project's port quota fails as a whole with ErrOverQuota
// (409 OverQuota), so that the agent can report quota exhaustion as such.
func testOverQuota(t *testing.T, e *env) {
	project := "ct-quota-" + randHex(4)
	setQuota := func(n int) {
		t.Helper()
		if err := fakeneutron.SetPortQuota(e.ctx, e.fx.Endpoint, project, n); err != nil {
			t.Fatal(err)
		}
	}
	setQuota(2)
	t.Cleanup(func() { setQuota(-1) })
	specs := e.specs(3, "node-quota")
	for i := range specs {
		specs[i].ProjectID = project
	}
	_, err := e.c.CreatePorts(e.ctx, specs)
	var apiErr *neutron.APIError
	if !errors.Is(err, neutron.ErrOverQuota) || !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("3 ports with a quota of 2: %v; want a 409 that is ErrOverQuota", err)
	}
	if errors.Is(err, neutron.ErrConflict) == false {
		t.Errorf("an over-quota error is a 409: errors.Is(ErrConflict) = false")
	}
	if left := e.tagged(); len(left) != 0 {
		t.Errorf("a bulk create over quota left %d ports", len(left))
	}
	ps, err := e.c.CreatePorts(e.ctx, specs[:2])
	if err != nil || len(ps) != 2 {
		t.Fatalf("2 ports within the quota: %d, %v", len(ps), err)
	}
	if errors.Is(fmt.Errorf("x: %w", &neutron.APIError{Status: 409, Type: "PortInUseAsSubPort"}), neutron.ErrOverQuota) {
		t.Error("a 409 of another type is ErrOverQuota")
	}
}

// A nested refill batch is one bulk create and one add_subports: the trunk's subports are known
// from the node's listing and from each add_subports answer. A view made stale by another writer
// costs one 409 and one read of the trunk, and no VLAN is used twice.
func testNestedRefillRequests(t *testing.T, e *env) {
	v := e.newVM()
	b := e.nested(v, "node-a")
	if _, err := b.ListPorts(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Extensions(e.ctx); err != nil { // read once per client, as the agent does at start
		t.Fatal(err)
	}
	batch := func(want map[string]int) []pool.Port {
		t.Helper()
		before := e.c.Stats()
		ps, err := b.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(v.ip), SubnetIDs: []string{e.fx.PodSubnet}, Count: 3})
		if err != nil {
			t.Fatalf("CreatePorts: %v", err)
		}
		got := map[string]int{}
		for op, o := range e.c.Stats().Sub(before) {
			got[op] = o.Count
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("requests of a batch: %v, want %v", got, want)
		}
		return ps
	}
	two := map[string]int{"ports.bulk_create": 1, "trunks.add_subports": 1}
	first := batch(two)
	batch(two)
	// Detaching (DeletePorts) keeps the view right: the next batch still needs no read.
	if failed := b.DeletePorts(e.ctx, first[:1]); len(failed) > 0 {
		t.Fatal(failed)
	}
	batch(two)
	// Another writer takes the VLAN about to be used: one clash, one read, one retry.
	intruder := e.create(e.specs(1, "intruder"))[0]
	neutron.SetBeforeAddSubports(e.c, func(ctx context.Context, trunkID string, subs []neutron.Subport, attempt int) {
		if attempt == 1 {
			if _, err := e.plain.AddSubports(ctx, trunkID, []neutron.Subport{{PortID: intruder.ID, SegmentationID: subs[0].SegmentationID}}); err != nil {
				t.Errorf("inject subport: %v", err)
			}
		}
	})
	defer neutron.SetBeforeAddSubports(e.c, nil)
	batch(map[string]int{"ports.bulk_create": 1, "trunks.add_subports": 2, "trunks.get": 1})
	seen := map[int]string{}
	for id, vlan := range e.trunkSubports(v.trunk.ID) {
		if other, dup := seen[vlan]; dup {
			t.Errorf("VLAN %d used by %s and %s", vlan, other, id)
		}
		seen[vlan] = id
	}
	if len(seen) != 3*4-1+1 {
		t.Errorf("trunk has %d subports, want 12 (4 batches of 3, one detached, the intruder)", len(seen))
	}
}
