package neutron

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/pool"
)

// Tag prefixes of the ports this project creates.
const (
	ClusterTagPrefix = "kuryr-cluster="
	NodeTagPrefix    = "kuryr-node="
	// cleanupTimeout bounds the deletion of ports a failed creation left, which runs even after
	// the caller's context is cancelled.
	cleanupTimeout = 2 * time.Minute
	vifBindingFail = "binding_failed"
)

// ClusterTag is the tag naming the cluster of a port.
func ClusterTag(cluster string) string { return ClusterTagPrefix + cluster }

// NodeTag is the tag naming the node of a port.
func NodeTag(node string) string { return NodeTagPrefix + node }

// portTags are the tags of every port of a node: cluster, node, then resource_tags.
func portTags(cluster, node string, resourceTags []string) []string {
	tags := []string{}
	if cluster != "" {
		tags = append(tags, ClusterTag(cluster))
	}
	if node != "" {
		tags = append(tags, NodeTag(node))
	}
	for _, t := range resourceTags {
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	return tags
}

func validateTags(tags []string) error {
	for _, t := range tags {
		// Neutron's tags filter is comma separated and a tag is at most 255 characters.
		if t == "" || strings.Contains(t, ",") || len(t) > 255 {
			return fmt.Errorf("tag %q is not usable in Neutron (empty, a comma, or longer than 255)", t)
		}
	}
	return nil
}

// common is what both backends share: the client, the tags, and the port conversions.
type common struct {
	c            *Client
	node         string // pool.Key.Node
	tags         []string
	resourceTags []string
	portDebug    bool
}

func (b *common) spec(req pool.CreateRequest) (PortSpec, error) {
	if req.Count <= 0 {
		return PortSpec{}, fmt.Errorf("create ports for pool %s: count %d", req.Key, req.Count)
	}
	if req.Key.Network == "" || req.Key.Project == "" || len(req.SubnetIDs) == 0 {
		return PortSpec{}, fmt.Errorf("create ports for pool %s: network, project and subnets are required (subnets %v)", req.Key, req.SubnetIDs)
	}
	return PortSpec{
		NetworkID:      req.Key.Network,
		ProjectID:      req.Key.Project,
		SubnetIDs:      req.SubnetIDs,
		Name:           pool.AvailablePortName,
		DeviceOwner:    pool.DeviceOwnerKuryr,
		SecurityGroups: req.SGs.IDs(),
		Tags:           b.tags,
	}, nil
}

func (b *common) toPoolPort(p Port) pool.Port {
	ips := make([]pool.FixedIP, len(p.FixedIPs))
	for i, ip := range p.FixedIPs {
		ips[i] = pool.FixedIP{SubnetID: ip.SubnetID, IP: ip.IPAddress}
	}
	return pool.Port{
		ID:         p.ID,
		Key:        pool.Key{Node: b.node, Project: p.ProjectID, Network: p.NetworkID},
		SGs:        pool.NewSGSet(p.SecurityGroups...),
		MAC:        p.MACAddress,
		FixedIPs:   ips,
		Status:     p.Status,
		VIFType:    p.VIFType,
		VIFDetails: p.VIFDetails,
	}
}

func (b *common) listed(p Port, attached bool) pool.ListedPort {
	return pool.ListedPort{Port: b.toPoolPort(p), Name: p.Name, DeviceID: p.DeviceID,
		DeviceOwner: p.DeviceOwner, Tags: p.Tags, Attached: attached}
}

func (b *common) debug(ctx context.Context, msg string, kv ...any) {
	logger := klog.FromContext(ctx)
	if b.portDebug {
		logger.Info(msg, kv...)
	} else {
		logger.V(4).Info(msg, kv...)
	}
}

// ResetPort gives a recycled port its pool identity back: name available-port, device_id "".
func (b *common) ResetPort(ctx context.Context, p pool.Port) error {
	name, dev := pool.AvailablePortName, ""
	if _, err := b.c.UpdatePort(ctx, p.ID, 0, PortUpdate{Name: &name, DeviceID: &dev}); err != nil {
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("reset port %s: %w: %w", p.ID, pool.ErrPortGone, err)
		}
		return fmt.Errorf("reset port %s: %w", p.ID, err)
	}
	b.debug(ctx, "Port reset for its pool", "port", p.ID, "pool", p.Key)
	return nil
}

// UpdateSGs rewrites the security groups of a port conditionally on the revision it reads first:
// a change made between the two requests fails with ErrRevisionMismatch instead of being lost.
func (b *common) UpdateSGs(ctx context.Context, p pool.Port, sgs pool.SGSet) error {
	cur, err := b.c.GetPort(ctx, p.ID)
	if err != nil {
		return fmt.Errorf("update security groups of port %s: %w", p.ID, err)
	}
	ids := sgs.IDs()
	if _, err := b.c.UpdatePort(ctx, p.ID, cur.RevisionNumber, PortUpdate{SecurityGroups: &ids}); err != nil {
		return fmt.Errorf("update security groups of port %s to %q: %w", p.ID, sgs, err)
	}
	b.debug(ctx, "Port security groups updated", "port", p.ID, "sgs", sgs)
	return nil
}

// MarkInUse records the pod on the port: name "<namespace>/<pod>" and device_id.
func (b *common) MarkInUse(ctx context.Context, p pool.Port, name, deviceID string) error {
	if _, err := b.c.UpdatePort(ctx, p.ID, 0, PortUpdate{Name: &name, DeviceID: &deviceID}); err != nil {
		return fmt.Errorf("mark port %s in use by %s: %w", p.ID, name, err)
	}
	b.debug(ctx, "Port marked in use", "port", p.ID, "pod", name, "deviceID", deviceID)
	return nil
}

// Node is the pool key's Node of this backend.
func (b *common) Node() string { return b.node }

// NestedOptions configures the nested (VLAN + trunk) backend of one node.
type NestedOptions struct {
	// NodeIP is the node's address on a worker subnet: the fixed IP of its trunk's parent port,
	// and the pools' Key.Node.
	NodeIP string
	// WorkerSubnets is [pod_vif_nested] worker_nodes_subnets.
	WorkerSubnets []string
	ClusterName   string   // tag kuryr-cluster=<ClusterName>
	NodeName      string   // tag kuryr-node=<NodeName> (default NodeIP)
	ResourceTags  []string // [neutron_defaults] resource_tags: on every port, and filter every listing
	// PortDebug ([kubernetes] port_debug) logs every port change at level 0 instead of 4.
	PortDebug bool
	// AttachRetries bounds add_subports attempts on VLAN clashes (default 5).
	AttachRetries int
}

// NestedBackend keeps a node's pool ports as VLAN subports of the node's trunk.
type NestedBackend struct {
	common
	opts NestedOptions

	mu       sync.Mutex
	parentID string
	trunkID  string
}

var _ pool.Backend = (*NestedBackend)(nil)

// NewNestedBackend checks the options; the trunk is looked up at first use.
func NewNestedBackend(c *Client, o NestedOptions) (*NestedBackend, error) {
	if c == nil {
		return nil, errors.New("nested backend: no Neutron client")
	}
	if o.NodeIP == "" {
		return nil, errors.New("nested backend: the node IP (trunk parent port address) is required")
	}
	if len(o.WorkerSubnets) == 0 {
		return nil, errors.New("nested backend: [pod_vif_nested] worker_nodes_subnets is required")
	}
	if o.NodeName == "" {
		o.NodeName = o.NodeIP
	}
	tags := portTags(o.ClusterName, o.NodeName, o.ResourceTags)
	if err := validateTags(tags); err != nil {
		return nil, fmt.Errorf("nested backend: %w", err)
	}
	return &NestedBackend{opts: o, common: common{c: c, node: o.NodeIP, tags: tags,
		resourceTags: o.ResourceTags, portDebug: o.PortDebug}}, nil
}

// trunk returns the node's trunk, found once.
func (b *NestedBackend) trunk(ctx context.Context) (string, error) {
	if id := b.cachedTrunkID(); id != "" {
		return id, nil
	}
	p, err := b.findParent(ctx)
	if err != nil {
		return "", err
	}
	return p.TrunkDetails.TrunkID, nil
}

// findParent looks the parent port up by the node IP (one list request) and caches it.
func (b *NestedBackend) findParent(ctx context.Context) (Port, error) {
	p, err := b.c.FindParentPort(ctx, b.opts.NodeIP, b.opts.WorkerSubnets, b.resourceTags)
	if err != nil {
		return Port{}, err
	}
	b.mu.Lock()
	b.parentID, b.trunkID = p.ID, p.TrunkDetails.TrunkID
	b.mu.Unlock()
	return p, nil
}

// parent reads the node's parent port with its trunk_details in one request: a GET when the port
// is known, else the lookup by node IP (which returns it too).
func (b *NestedBackend) parent(ctx context.Context) (Port, error) {
	b.mu.Lock()
	id := b.parentID
	b.mu.Unlock()
	if id == "" {
		return b.findParent(ctx)
	}
	p, err := b.c.GetPort(ctx, id)
	if errors.Is(err, ErrNotFound) {
		b.forgetTrunk()
		return b.findParent(ctx)
	}
	if err != nil {
		return Port{}, err
	}
	if p.TrunkDetails == nil || p.TrunkDetails.TrunkID == "" {
		b.forgetTrunk()
		return Port{}, fmt.Errorf("parent port %s of node IP %s has no trunk any more", id, b.opts.NodeIP)
	}
	if p.TrunkDetails.TrunkID != b.cachedTrunkID() {
		b.mu.Lock()
		b.trunkID = p.TrunkDetails.TrunkID
		b.mu.Unlock()
	}
	return p, nil
}

func (b *NestedBackend) cachedTrunkID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.trunkID
}

// forgetTrunk drops the cached trunk (it was deleted or replaced).
func (b *NestedBackend) forgetTrunk() {
	b.mu.Lock()
	b.parentID, b.trunkID = "", ""
	b.mu.Unlock()
}

// TrunkID is the node's trunk (looked up on first use).
func (b *NestedBackend) TrunkID(ctx context.Context) (string, error) {
	return b.trunk(ctx)
}

// CreatePorts creates req.Count ports in one bulk request and attaches them all to the node's
// trunk in one add_subports call. All or nothing: on any failure the ports are deleted.
func (b *NestedBackend) CreatePorts(ctx context.Context, req pool.CreateRequest) ([]pool.Port, error) {
	spec, err := b.spec(req)
	if err != nil {
		return nil, err
	}
	trunkID, err := b.trunk(ctx)
	if err != nil {
		return nil, fmt.Errorf("create ports for pool %s: %w", req.Key, err)
	}
	// Note: a trunk deleted since it was cached shows as ErrNotFound at attach time (below), which
	// drops the cache; the ports are deleted and the next call looks the trunk up again.
	specs := make([]PortSpec, req.Count)
	for i := range specs {
		specs[i] = spec
	}
	created, err := b.c.CreatePorts(ctx, specs)
	if err != nil {
		return nil, fmt.Errorf("create ports for pool %s: %w", req.Key, err)
	}
	ids := make([]string, len(created))
	for i, p := range created {
		ids[i] = p.ID
	}
	subs, err := b.c.AttachPorts(ctx, trunkID, ids, b.opts.AttachRetries)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			b.forgetTrunk()
		}
		return nil, errors.Join(fmt.Errorf("create ports for pool %s: %w", req.Key, err), b.c.deleteCreated(ctx, created))
	}
	out := make([]pool.Port, len(created))
	for i, p := range created {
		out[i] = b.toPoolPort(p)
		out[i].Key.Node = b.node
		out[i].VLAN = subs[i].SegmentationID
		out[i].TrunkID = trunkID
	}
	b.debug(ctx, "Pool ports created and attached", "pool", req.Key, "trunk", trunkID, "ports", ids)
	return out, nil
}

// DeletePorts detaches the ports from their trunk (one remove_subports per trunk) and deletes them.
func (b *NestedBackend) DeletePorts(ctx context.Context, ports []pool.Port) map[string]error {
	byTrunk := map[string][]string{}
	ids := make([]string, 0, len(ports))
	for _, p := range ports {
		ids = append(ids, p.ID)
		if p.TrunkID != "" {
			byTrunk[p.TrunkID] = append(byTrunk[p.TrunkID], p.ID)
		}
	}
	for trunkID, tids := range byTrunk {
		err := b.c.RemoveSubports(ctx, trunkID, tids)
		if errors.Is(err, ErrNotFound) {
			// Some were not attached (or the trunk is gone): Neutron detached none, so go one by
			// one; DeletePort also detaches a port that turns out to be a subport.
			for _, id := range tids {
				if err := b.c.RemoveSubports(ctx, trunkID, []string{id}); err != nil && !errors.Is(err, ErrNotFound) {
					klog.FromContext(ctx).V(2).Info("Detaching subport failed; deleting it anyway", "port", id, "err", err)
				}
			}
		} else if err != nil {
			klog.FromContext(ctx).V(2).Info("Detaching subports failed; deleting them anyway", "trunk", trunkID, "err", err)
		}
	}
	failed := b.c.DeletePorts(ctx, ids)
	b.debug(ctx, "Pool ports deleted", "ports", ids, "failed", len(failed))
	return failed
}

// ListPorts returns the node's pool ports with two requests whatever their number (plus one per
// extra page): the parent port (its trunk_details list the subports and VLANs) and one filtered
// list of kuryr ports. Attached ports are returned whatever their tags (pre-created ones are
// loaded too); ports tagged for this node but not attached are returned with Attached false.
func (b *NestedBackend) ListPorts(ctx context.Context) ([]pool.ListedPort, error) {
	parent, err := b.parent(ctx)
	if err != nil {
		return nil, fmt.Errorf("list pool ports: %w", err)
	}
	vlans := make(map[string]int, len(parent.TrunkDetails.SubPorts))
	for _, s := range parent.TrunkDetails.SubPorts {
		vlans[s.PortID] = s.SegmentationID
	}
	trunkID := parent.TrunkDetails.TrunkID
	b.c.vlans.learn(trunkID, parent.TrunkDetails.SubPorts) // the first refill need not read the trunk
	mine := []string{NodeTag(b.opts.NodeName)}
	if b.opts.ClusterName != "" {
		mine = append(mine, ClusterTag(b.opts.ClusterName))
	}
	var out []pool.ListedPort
	err = b.c.EachPortPage(ctx, PortFilter{
		DeviceOwners: []string{pool.DeviceOwnerSubport, pool.DeviceOwnerKuryr},
		Tags:         b.resourceTags,
	}, func(page []Port) error {
		for _, p := range page {
			vlan, attached := vlans[p.ID]
			if !attached && !p.HasTags(mine...) {
				continue // another node's port
			}
			lp := b.listed(p, attached)
			if attached {
				lp.VLAN, lp.TrunkID = vlan, trunkID
			}
			out = append(out, lp)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list pool ports of trunk %s: %w", trunkID, err)
	}
	return out, nil
}

// BareMetalOptions configures the bare-metal backend of one node.
type BareMetalOptions struct {
	NodeName     string   // binding:host_id of the ports, tag kuryr-node=<NodeName>, and the pools' Key.Node
	ClusterName  string   // tag kuryr-cluster=<ClusterName>
	ResourceTags []string // [neutron_defaults] resource_tags
	PortDebug    bool     // [kubernetes] port_debug: log every port change at level 0
	// IgnoreBindingFailure keeps ports whose binding failed (binding:vif_type binding_failed). By
	// default, as in kuryr, such a batch is deleted and CreatePorts fails; a Neutron without an L2
	// agent on the host (the test server) fails every binding.
	IgnoreBindingFailure bool
}

// BareMetalBackend keeps a node's pool ports as ports bound to the node (device_owner compute:kuryr).
type BareMetalBackend struct {
	common
	opts BareMetalOptions
}

var _ pool.Backend = (*BareMetalBackend)(nil)

// NewBareMetalBackend checks the options.
func NewBareMetalBackend(c *Client, o BareMetalOptions) (*BareMetalBackend, error) {
	if c == nil {
		return nil, errors.New("bare-metal backend: no Neutron client")
	}
	if o.NodeName == "" {
		return nil, errors.New("bare-metal backend: the node name (binding:host_id) is required")
	}
	tags := portTags(o.ClusterName, o.NodeName, o.ResourceTags)
	if err := validateTags(tags); err != nil {
		return nil, fmt.Errorf("bare-metal backend: %w", err)
	}
	return &BareMetalBackend{opts: o, common: common{c: c, node: o.NodeName, tags: tags,
		resourceTags: o.ResourceTags, portDebug: o.PortDebug}}, nil
}

// CreatePorts creates req.Count ports bound to the node in one bulk request.
func (b *BareMetalBackend) CreatePorts(ctx context.Context, req pool.CreateRequest) ([]pool.Port, error) {
	spec, err := b.spec(req)
	if err != nil {
		return nil, err
	}
	spec.HostID = b.opts.NodeName
	specs := make([]PortSpec, req.Count)
	for i := range specs {
		specs[i] = spec
	}
	created, err := b.c.CreatePorts(ctx, specs)
	if err != nil {
		return nil, fmt.Errorf("create ports for pool %s: %w", req.Key, err)
	}
	// Bulk-created ports may report "unbound" while binding is still going on (Neutron bug
	// 1696051); like kuryr, judge the batch by its first port.
	if !b.opts.IgnoreBindingFailure && created[0].VIFType == vifBindingFail {
		err := fmt.Errorf("create ports for pool %s: binding of port %s to host %s failed (binding:vif_type %s)",
			req.Key, created[0].ID, b.opts.NodeName, vifBindingFail)
		return nil, errors.Join(err, b.c.deleteCreated(ctx, created))
	}
	out := make([]pool.Port, len(created))
	ids := make([]string, len(created))
	for i, p := range created {
		out[i] = b.toPoolPort(p)
		ids[i] = p.ID
	}
	b.debug(ctx, "Pool ports created", "pool", req.Key, "host", b.opts.NodeName, "ports", ids)
	return out, nil
}

// DeletePorts deletes the ports with bounded concurrency; ports already gone count as deleted.
func (b *BareMetalBackend) DeletePorts(ctx context.Context, ports []pool.Port) map[string]error {
	ids := make([]string, len(ports))
	for i, p := range ports {
		ids[i] = p.ID
	}
	failed := b.c.DeletePorts(ctx, ids)
	b.debug(ctx, "Pool ports deleted", "ports", ids, "failed", len(failed))
	return failed
}

// ListPorts returns the node's pool ports with one filtered list request (one per page when
// list_page_size is set): device_owner compute:kuryr bound to this host, pre-created ones included.
func (b *BareMetalBackend) ListPorts(ctx context.Context) ([]pool.ListedPort, error) {
	var out []pool.ListedPort
	err := b.c.EachPortPage(ctx, PortFilter{
		DeviceOwners: []string{pool.DeviceOwnerKuryr},
		HostID:       b.opts.NodeName,
		Tags:         b.resourceTags,
	}, func(page []Port) error {
		for _, p := range page {
			out = append(out, b.listed(p, true))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list pool ports of host %s: %w", b.opts.NodeName, err)
	}
	slices.SortFunc(out, func(a, c pool.ListedPort) int { return strings.Compare(a.ID, c.ID) })
	return out, nil
}
