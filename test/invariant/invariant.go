// Package invariant checks the promises of a node agent over everything that holds the node's ports,
// after crashes and faults: Neutron (the ports tagged for the node), the agent's checkpoint, its
// pools (the management API) and the kernel (the pods' netns and the host ends of their veths).
// The crash and fault-injection suites share it.
package invariant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/kuryr-pools/kuryr/agent"
	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/netns"
	"github.com/kuryr-pools/kuryr/neutron"
)

// Container is an attachment the runtime believes is live: its last ADD succeeded and no DEL
// followed.
type Container struct {
	ContainerID string
	IfName      string
	Netns       string
}

// Options say where the node's state lives.
type Options struct {
	Neutron *neutron.Client
	// Node is the agent's node name: its kuryr-node tag and, bare metal, the ports' binding:host_id.
	Node string
	// Cluster is [kubernetes] cluster_name (the kuryr-cluster tag).
	Cluster string
	// Checkpoint is the agent's checkpoint file; ManageSocket its management socket.
	Checkpoint   string
	ManageSocket string
	// NetworkID and PodNamespace, when both set, also scan the pod network: a port named
	// "<PodNamespace>/..." is one of the test's pods and must carry the node's tags. This lists the
	// whole network: pollers may leave it out.
	NetworkID, PodNamespace string
	// Live are the containers the runtime holds.
	Live []Container
	// OVSDB and OVSBridge, when set, are where veth plugs of OVS-bound ports go: an OVS port of
	// a tagged port must belong to an attachment.
	OVSDB, OVSBridge string
}

// Report is what Check found. Every list holds one line per problem.
type Report struct {
	// Figures.
	Tagged, Free, Cooling, InUse, Live int
	// Leaked: tagged ports neither free, cooling, nor held by a live container.
	Leaked []string
	// DoubleAssigned: a port (or its IP or MAC) held by two containers, or held and free at once.
	DoubleAssigned []string
	// Broken: live containers without an attachment, or whose interface is missing or not as
	// their port says.
	Broken []string
	// Stale: checkpoint attachments of containers the runtime no longer holds.
	Stale []string
	// Untagged: ports bound to this node (or named for the test's pods) without the node's tags.
	Untagged []string
	// StaleLinks: host veth ends of ports no live container holds.
	StaleLinks []string
	// Inconsistent: sources that disagree (a port in two states, counts that differ).
	Inconsistent []string
	// StaleFiles: temporary checkpoint files left next to the checkpoint.
	StaleFiles []string
}

// OK is true when no invariant is broken.
func (r *Report) OK() bool {
	return len(r.Leaked)+len(r.DoubleAssigned)+len(r.Broken)+len(r.Stale)+len(r.Untagged)+len(r.StaleLinks)+len(r.Inconsistent)+len(r.StaleFiles) == 0
}

// String is a one-line summary followed by one line per problem.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tagged=%d free=%d cooling=%d inUse=%d live=%d leaked=%d doubleAssigned=%d broken=%d stale=%d untagged=%d staleLinks=%d inconsistent=%d staleFiles=%d",
		r.Tagged, r.Free, r.Cooling, r.InUse, r.Live, len(r.Leaked), len(r.DoubleAssigned), len(r.Broken), len(r.Stale), len(r.Untagged), len(r.StaleLinks), len(r.Inconsistent), len(r.StaleFiles))
	for _, l := range [][]string{r.Leaked, r.DoubleAssigned, r.Broken, r.Stale, r.Untagged, r.StaleLinks, r.Inconsistent, r.StaleFiles} {
		for _, s := range l {
			b.WriteString("\n  " + s)
		}
	}
	return b.String()
}

// Check reads every source once and compares them. The sources are read one after the other, so a
// port moving between states while they are read shows as a problem: callers poll until the
// report is OK (or give up) rather than fail on the first look. The error is for a source that
// could not be read at all.
func Check(ctx context.Context, o Options) (*Report, error) {
	r := &Report{Live: len(o.Live)}

	ckpt, err := agent.OpenCheckpoint(o.Checkpoint)
	if err != nil {
		return nil, fmt.Errorf("read the checkpoint: %w", err)
	}
	pools, free, err := readPools(ctx, o.ManageSocket, o.Node)
	if err != nil {
		return nil, err
	}
	tagged, err := o.Neutron.ListPorts(ctx, neutron.PortFilter{Tags: []string{neutron.NodeTag(o.Node), neutron.ClusterTag(o.Cluster)}})
	if err != nil {
		return nil, fmt.Errorf("list the ports tagged for node %s: %w", o.Node, err)
	}
	onHost, err := o.Neutron.ListPorts(ctx, neutron.PortFilter{HostID: o.Node})
	if err != nil {
		return nil, fmt.Errorf("list the ports bound to %s: %w", o.Node, err)
	}

	byID := map[string]neutron.Port{}
	for _, p := range tagged {
		byID[p.ID] = p
	}
	r.Tagged = len(byID)

	// The checkpoint: attachments, each with its own port, IP and MAC.
	live := map[string]Container{}
	for _, c := range o.Live {
		live[c.ContainerID+"/"+c.IfName] = c
	}
	held := map[string]*agent.Attachment{} // port ID -> attachment
	ipOf, macOf := map[string]string{}, map[string]string{}
	atts := ckpt.Attachments()
	r.InUse = len(atts)
	for _, a := range atts {
		if prev, ok := held[a.Port.ID]; ok {
			r.DoubleAssigned = append(r.DoubleAssigned, fmt.Sprintf("port %s held by %s and %s", a.Port.ID, prev.Owner(), a.Owner()))
		}
		held[a.Port.ID] = a
		if prev, ok := macOf[strings.ToLower(a.Plug.MAC)]; ok {
			r.DoubleAssigned = append(r.DoubleAssigned, fmt.Sprintf("MAC %s held by %s and %s", a.Plug.MAC, prev, a.Owner()))
		}
		macOf[strings.ToLower(a.Plug.MAC)] = a.Owner()
		for _, ip := range a.Port.FixedIPs {
			if prev, ok := ipOf[ip.IP]; ok {
				r.DoubleAssigned = append(r.DoubleAssigned, fmt.Sprintf("IP %s held by %s and %s", ip.IP, prev, a.Owner()))
			}
			ipOf[ip.IP] = a.Owner()
		}
		if _, ok := live[a.Owner()]; !ok {
			r.Stale = append(r.Stale, fmt.Sprintf("checkpoint holds port %s for %s, which the runtime does not hold", a.Port.ID, a.Owner()))
		}
		if _, ok := byID[a.Port.ID]; !ok {
			r.Broken = append(r.Broken, fmt.Sprintf("%s holds port %s, which is not in Neutron (tagged for the node)", a.Owner(), a.Port.ID))
		}
	}
	cooling := map[string]bool{}
	for _, c := range ckpt.CoolingPorts() {
		cooling[c.Port.ID] = true
	}
	r.Cooling = len(cooling)

	// The pools: free ports are held by nobody and cooling ports are not free.
	freeSet := map[string]bool{}
	for _, id := range free {
		freeSet[id] = true
		if a, ok := held[id]; ok {
			r.DoubleAssigned = append(r.DoubleAssigned, fmt.Sprintf("port %s is free in the pool and held by %s", id, a.Owner()))
		}
		if cooling[id] {
			r.Inconsistent = append(r.Inconsistent, fmt.Sprintf("port %s is free in the pool and cooling in the checkpoint", id))
		}
		if _, ok := byID[id]; !ok {
			r.Inconsistent = append(r.Inconsistent, fmt.Sprintf("port %s is free in the pool but not in Neutron", id))
		}
	}
	r.Free = len(freeSet)
	for id := range cooling {
		if a, ok := held[id]; ok {
			r.DoubleAssigned = append(r.DoubleAssigned, fmt.Sprintf("port %s is cooling and held by %s", id, a.Owner()))
		}
	}
	var poolInUse, poolInFlight int
	for _, p := range pools {
		poolInUse += p.InUse
		poolInFlight += p.InFlight
	}
	if poolInUse != len(atts) {
		r.Inconsistent = append(r.Inconsistent, fmt.Sprintf("the pools count %d ports in use, the checkpoint %d attachments", poolInUse, len(atts)))
	}
	if poolInFlight > 0 {
		r.Inconsistent = append(r.Inconsistent, fmt.Sprintf("%d ports being created", poolInFlight))
	}

	// Neutron: every tagged port is in exactly one place.
	for _, id := range sortedKeys(byID) {
		_, h := held[id]
		if !h && !freeSet[id] && !cooling[id] {
			p := byID[id]
			r.Leaked = append(r.Leaked, fmt.Sprintf("port %s (%s, device_id %q) is neither free, cooling, nor held", id, p.Name, p.DeviceID))
		}
	}
	// Nothing of this node without the tags (the agent binds every port it creates to its node).
	ours := onHost
	if o.NetworkID != "" && o.PodNamespace != "" {
		onNet, err := o.Neutron.ListPorts(ctx, neutron.PortFilter{NetworkID: o.NetworkID})
		if err != nil {
			return nil, fmt.Errorf("list the ports of network %s: %w", o.NetworkID, err)
		}
		for _, p := range onNet {
			if p.HostID != o.Node && strings.HasPrefix(p.Name, o.PodNamespace+"/") {
				ours = append(ours, p)
			}
		}
	}
	for _, p := range ours {
		if !p.HasTags(neutron.NodeTag(o.Node), neutron.ClusterTag(o.Cluster)) {
			r.Untagged = append(r.Untagged, fmt.Sprintf("port %s (%s, host %q) lacks the node's tags: %v", p.ID, p.Name, p.HostID, p.Tags))
		}
	}

	// The kernel: every live container has its interface as its port says.
	for _, key := range sortedKeys(live) {
		c := live[key]
		a, ok := ckpt.Get(c.ContainerID, c.IfName)
		if !ok {
			r.Broken = append(r.Broken, fmt.Sprintf("live container %s has no attachment in the checkpoint", key))
			continue
		}
		if a.Netns != c.Netns {
			r.Broken = append(r.Broken, fmt.Sprintf("%s: checkpoint netns %s, runtime netns %s", key, a.Netns, c.Netns))
		}
		var ips []string
		if np, ok := byID[a.Port.ID]; ok {
			if !strings.EqualFold(np.MACAddress, a.Plug.MAC) {
				r.Broken = append(r.Broken, fmt.Sprintf("%s: checkpoint MAC %s, Neutron port %s has %s", key, a.Plug.MAC, np.ID, np.MACAddress))
			}
			for _, ip := range np.FixedIPs {
				ips = append(ips, ip.IPAddress)
			}
		}
		if err := checkLink(c, a.Plug.MAC, ips); err != nil {
			r.Broken = append(r.Broken, fmt.Sprintf("%s (port %s): %v", key, a.Port.ID, err))
		}
	}
	// The host ends: a veth (or OVS port) named after a tagged port belongs to an attachment.
	mine, want := map[string]string{}, map[string]bool{}
	for id := range byID {
		mine[netns.HostIfName(id)] = id
	}
	for _, a := range atts {
		want[netns.HostIfName(a.Port.ID)] = true
	}
	hostIfs, err := hostLinks()
	if err != nil {
		return nil, err
	}
	for _, name := range hostIfs {
		if id, ok := mine[name]; ok && !want[name] {
			r.StaleLinks = append(r.StaleLinks, fmt.Sprintf("host link %s of port %s belongs to no attachment", name, id))
		}
	}
	if o.OVSBridge != "" {
		ovsPorts, err := ovsPorts(ctx, o.OVSDB, o.OVSBridge)
		if err != nil {
			return nil, err
		}
		for _, name := range ovsPorts {
			if id, ok := mine[name]; ok && !want[name] {
				r.StaleLinks = append(r.StaleLinks, fmt.Sprintf("OVS port %s of port %s on %s belongs to no attachment", name, id, o.OVSBridge))
			}
		}
	}
	// The checkpoint's directory: a write cut short must not leave its temporary file for good.
	tmps, err := filepath.Glob(filepath.Join(filepath.Dir(o.Checkpoint), "."+filepath.Base(o.Checkpoint)+".tmp-*"))
	if err != nil {
		return nil, err
	}
	for _, f := range tmps {
		r.StaleFiles = append(r.StaleFiles, "temporary checkpoint file "+f)
	}
	for _, l := range [][]string{r.Leaked, r.DoubleAssigned, r.Broken, r.Stale, r.Untagged, r.StaleLinks, r.Inconsistent, r.StaleFiles} {
		sort.Strings(l)
	}
	return r, nil
}

// readPools returns the node's pools and the IDs of their free ports, from the management API.
func readPools(ctx context.Context, sock, node string) ([]manage.Pool, []string, error) {
	c := manage.NewClient(sock)
	var list manage.Answer
	if err := call(ctx, c, manage.PathList, struct{}{}, &list); err != nil {
		return nil, nil, err
	}
	var free []string
	for _, p := range list.Pools {
		if p.Node != node {
			return nil, nil, fmt.Errorf("the management API lists pool %s/%s/%s, not of node %s", p.Node, p.Project, p.Network, node)
		}
		key := []json.RawMessage{jsonString(p.Node), jsonString(p.Project), jsonString(p.Network)}
		var show manage.Answer
		if err := call(ctx, c, manage.PathShow, manage.ShowRequest{PoolKey: key}, &show); err != nil {
			return nil, nil, err
		}
		free = append(free, show.PortIDs...)
	}
	return list.Pools, free, nil
}

func call(ctx context.Context, c *manage.Client, path string, body, into any) error {
	resp, err := c.Do(ctx, "GET", path, body, true)
	if err != nil {
		return fmt.Errorf("management API %s: %w", path, err)
	}
	if !resp.OK() {
		return fmt.Errorf("management API %s: status %d: %s", path, resp.StatusCode, resp.Body)
	}
	if err := json.Unmarshal(resp.Body, into); err != nil {
		return fmt.Errorf("management API %s: %w: %s", path, err, resp.Body)
	}
	return nil
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// checkLink verifies that c's interface exists in its netns, up, with mac and every one of ips.
func checkLink(c Container, mac string, ips []string) error {
	return ns.WithNetNSPath(c.Netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(c.IfName)
		if err != nil {
			return fmt.Errorf("interface %s in %s: %w", c.IfName, c.Netns, err)
		}
		var errs []error
		if got := l.Attrs().HardwareAddr.String(); !strings.EqualFold(got, mac) {
			errs = append(errs, fmt.Errorf("MAC %s, want %s", got, mac))
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			errs = append(errs, errors.New("interface is down"))
		}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("addresses of %s: %w", c.IfName, err)
		}
		var have []string
		for _, a := range addrs {
			have = append(have, a.IP.String())
		}
		for _, ip := range ips {
			if !slices.Contains(have, ip) {
				errs = append(errs, fmt.Errorf("address %s missing (has %v)", ip, have))
			}
		}
		return errors.Join(errs...)
	})
}

// hostLinks lists the names of the links of the host netns.
func hostLinks() ([]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list host links: %w", err)
	}
	out := make([]string, 0, len(links))
	for _, l := range links {
		out = append(out, l.Attrs().Name)
	}
	return out, nil
}

// ovsPorts lists the ports of an OVS bridge.
func ovsPorts(ctx context.Context, db, bridge string) ([]string, error) {
	args := []string{"--timeout=10", "list-ports", bridge}
	if db != "" {
		args = append([]string{"--db=" + db}, args...)
	}
	out, err := exec.CommandContext(ctx, "ovs-vsctl", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ovs-vsctl list-ports %s: %w: %s", bridge, err, out)
	}
	return strings.Fields(string(out)), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
