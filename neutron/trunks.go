package neutron

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"k8s.io/klog/v2"
)

// VLAN segmentation IDs usable on a trunk.
const (
	MinVLAN = 1
	MaxVLAN = 4094
)

// Trunk is a Neutron trunk.
type Trunk struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	PortID         string    `json:"port_id"`
	ProjectID      string    `json:"project_id"`
	Status         string    `json:"status"`
	SubPorts       []Subport `json:"sub_ports"`
	RevisionNumber int       `json:"revision_number"`
	Tags           []string  `json:"tags"`
}

// Subport is a port attached to a trunk with its VLAN.
type Subport struct {
	PortID           string `json:"port_id"`
	SegmentationType string `json:"segmentation_type"`
	SegmentationID   int    `json:"segmentation_id"`
	MACAddress       string `json:"mac_address,omitempty"` // only in trunk_details
}

// GetTrunk reads a trunk with its subports.
func (c *Client) GetTrunk(ctx context.Context, id string) (Trunk, error) {
	var resp struct {
		Trunk Trunk `json:"trunk"`
	}
	const op = "trunks.get"
	if _, err := c.sc.Get(withOp(ctx, op), c.sc.ServiceURL("trunks", id), &resp, nil); err != nil {
		return Trunk{}, fmt.Errorf("get trunk %s: %w", id, apiError(op, err))
	}
	return resp.Trunk, nil
}

// CreateTrunk creates a trunk on a parent port (tests and tools; the pools never create trunks).
func (c *Client) CreateTrunk(ctx context.Context, name, parentPortID, projectID string) (Trunk, error) {
	b := map[string]any{"name": name, "port_id": parentPortID}
	if projectID != "" {
		b["project_id"] = projectID
	}
	var resp struct {
		Trunk Trunk `json:"trunk"`
	}
	const op = "trunks.create"
	_, err := c.sc.Post(withOp(ctx, op), c.sc.ServiceURL("trunks"), map[string]any{"trunk": b}, &resp,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusCreated}})
	if err != nil {
		return Trunk{}, fmt.Errorf("create trunk on port %s: %w", parentPortID, apiError(op, err))
	}
	return resp.Trunk, nil
}

// DeleteTrunk deletes a trunk; a trunk already gone counts as deleted.
func (c *Client) DeleteTrunk(ctx context.Context, id string) error {
	const op = "trunks.delete"
	_, err := c.sc.Delete(withOp(ctx, op), c.sc.ServiceURL("trunks", id), nil)
	if err = apiError(op, err); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete trunk %s: %w", id, err)
	}
	return nil
}

// AddSubports attaches subports in ONE request. Neutron does all or nothing: a VLAN ID already used
// on the trunk, or a port already a subport, fails the whole batch with 409 (ErrConflict).
func (c *Client) AddSubports(ctx context.Context, trunkID string, subs []Subport) (Trunk, error) {
	body := make([]map[string]any, len(subs))
	for i, s := range subs {
		typ := s.SegmentationType
		if typ == "" {
			typ = "vlan"
		}
		body[i] = map[string]any{"port_id": s.PortID, "segmentation_type": typ, "segmentation_id": s.SegmentationID}
	}
	var t Trunk
	const op = "trunks.add_subports"
	_, err := c.sc.Put(withOp(ctx, op), c.sc.ServiceURL("trunks", trunkID, "add_subports"),
		map[string]any{"sub_ports": body}, &t, &gophercloud.RequestOpts{OkCodes: []int{http.StatusOK}})
	if err != nil {
		return Trunk{}, fmt.Errorf("add %d subports to trunk %s: %w", len(subs), trunkID, apiError(op, err))
	}
	return t, nil
}

// RemoveSubports detaches ports from a trunk in one request. IDs are de-duplicated (Neutron rejects
// duplicates). A single port that is not a subport counts as detached; with several ports a 404 is
// returned, since Neutron then detached none of them.
func (c *Client) RemoveSubports(ctx context.Context, trunkID string, portIDs []string) error {
	ids := slices.Compact(slices.Sorted(slices.Values(portIDs)))
	if len(ids) == 0 {
		return nil
	}
	body := make([]map[string]string, len(ids))
	for i, id := range ids {
		body[i] = map[string]string{"port_id": id}
	}
	const op = "trunks.remove_subports"
	_, err := c.sc.Put(withOp(ctx, op), c.sc.ServiceURL("trunks", trunkID, "remove_subports"),
		map[string]any{"sub_ports": body}, nil, &gophercloud.RequestOpts{OkCodes: []int{http.StatusOK}})
	err = apiError(op, err)
	if errors.Is(err, ErrNotFound) && len(ids) == 1 {
		c.vlans.removed(trunkID, ids)
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove subports %v from trunk %s: %w", ids, trunkID, err)
	}
	c.vlans.removed(trunkID, ids)
	return nil
}

// FindParentPort finds the trunk parent port of a node: the port holding nodeIP on one of the
// worker subnets ([pod_vif_nested] worker_nodes_subnets), with one filtered list request. tags
// ([neutron_defaults] resource_tags) also filter, as in kuryr.
func (c *Client) FindParentPort(ctx context.Context, nodeIP string, workerSubnets, tags []string) (Port, error) {
	ps, err := c.ListPorts(ctx, PortFilter{FixedIP: nodeIP, Tags: tags})
	if err != nil {
		return Port{}, fmt.Errorf("find the trunk parent port of node IP %s: %w", nodeIP, err)
	}
	for _, p := range ps {
		for _, ip := range p.FixedIPs {
			if ip.IPAddress == nodeIP && slices.Contains(workerSubnets, ip.SubnetID) {
				if p.TrunkDetails == nil || p.TrunkDetails.TrunkID == "" {
					return Port{}, fmt.Errorf("port %s holds node IP %s on worker subnet %s but has no trunk", p.ID, nodeIP, ip.SubnetID)
				}
				return p, nil
			}
		}
	}
	return Port{}, fmt.Errorf("no port holds node IP %s on the worker subnets %v (%d ports have the IP): %w",
		nodeIP, workerSubnets, len(ps), ErrNotFound)
}

// AttachPorts attaches ports to a trunk in one add_subports call with VLAN IDs that are free on the
// trunk (not among its subports, nor handed out by this process moments ago). The trunk's subports
// are read once and then known from the answers of add_subports (which return the whole trunk), so
// a refill batch costs one request here. When another writer took one of the IDs, Neutron refuses
// the whole batch with 409: the trunk is read again, IDs chosen again, and the call repeated, up to
// attempts times. It returns the subports in the order of portIDs. The caller owns the ports: on
// error none of them is attached.
func (c *Client) AttachPorts(ctx context.Context, trunkID string, portIDs []string, attempts int) ([]Subport, error) {
	if attempts <= 0 {
		attempts = defaultAttachRetries
	}
	logger := klog.FromContext(ctx)
	var lastErr error
	for attempt := 1; attempt <= attempts; attempt++ {
		current, known := c.vlans.knownSubports(trunkID)
		if attempt > 1 || !known {
			t, err := c.GetTrunk(ctx, trunkID)
			if err != nil {
				if errors.Is(err, ErrNotFound) {
					c.vlans.forget(trunkID)
				}
				return nil, err
			}
			current = t.SubPorts
			c.vlans.learn(trunkID, current)
		}
		vlans, err := c.vlans.choose(trunkID, current, len(portIDs), c.now())
		if err != nil {
			return nil, fmt.Errorf("trunk %s: %w", trunkID, err)
		}
		subs := make([]Subport, len(portIDs))
		for i, id := range portIDs {
			subs[i] = Subport{PortID: id, SegmentationType: "vlan", SegmentationID: vlans[i]}
		}
		if c.beforeAddSubports != nil {
			c.beforeAddSubports(ctx, trunkID, subs, attempt)
		}
		t, err := c.AddSubports(ctx, trunkID, subs)
		if err == nil {
			c.vlans.hold(trunkID, vlans, c.now().Add(defaultRecentVLANHold))
			if t.ID == trunkID {
				c.vlans.learn(trunkID, t.SubPorts)
			} else {
				c.vlans.forget(trunkID) // an answer without the trunk: read it next time
			}
			return subs, nil
		}
		c.vlans.release(trunkID, vlans)
		if errors.Is(err, ErrNotFound) {
			c.vlans.forget(trunkID)
		}
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Type == "TrunkPortInUse" {
			return nil, err // not a VLAN clash: choosing other IDs cannot help
		}
		lastErr = err
		logger.V(2).Info("VLAN clash on trunk, choosing again", "trunk", trunkID, "attempt", attempt, "err", err)
	}
	return nil, fmt.Errorf("attach %d ports to trunk %s: gave up after %d VLAN clashes: %w", len(portIDs), trunkID, attempts, lastErr)
}

// vlanReservations are VLAN IDs this process has chosen per trunk that the trunk may not show yet:
// those of an add_subports in flight and, for a short while, those just attached; and the subports
// each trunk had when this process last saw it. A stale view costs a 409 and a fresh read, never a
// wrong attachment: Neutron refuses a clashing batch whole.
type vlanReservations struct {
	mu    sync.Mutex
	m     map[string]map[int]time.Time // trunk -> VLAN -> until (zero: in flight)
	known map[string][]Subport         // trunk -> its subports, as last seen
}

// learn records the subports of a trunk as read from Neutron.
func (v *vlanReservations) learn(trunkID string, subs []Subport) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.known == nil {
		v.known = map[string][]Subport{}
	}
	v.known[trunkID] = slices.Clone(subs)
}

// knownSubports returns the subports of a trunk as last seen, if it was.
func (v *vlanReservations) knownSubports(trunkID string) ([]Subport, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	subs, ok := v.known[trunkID]
	return subs, ok
}

// forget drops what is known of a trunk: the next attach reads it.
func (v *vlanReservations) forget(trunkID string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.known, trunkID)
}

// removed drops detached ports from the known subports of a trunk.
func (v *vlanReservations) removed(trunkID string, portIDs []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if subs, ok := v.known[trunkID]; ok {
		v.known[trunkID] = slices.DeleteFunc(subs, func(s Subport) bool { return slices.Contains(portIDs, s.PortID) })
	}
}

// ErrNoFreeVLAN: the trunk has no VLAN ID left for another subport (all of 1..4094 are used).
var ErrNoFreeVLAN = errors.New("no free VLAN ID left (1..4094)")

// choose reserves n VLAN IDs free on the trunk (random, so that two writers rarely collide).
func (v *vlanReservations) choose(trunkID string, current []Subport, n int, now time.Time) ([]int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[string]map[int]time.Time{}
	}
	res := v.m[trunkID]
	if res == nil {
		res = map[int]time.Time{}
		v.m[trunkID] = res
	}
	used := make([]bool, MaxVLAN+1)
	for _, s := range current {
		if s.SegmentationID >= MinVLAN && s.SegmentationID <= MaxVLAN {
			used[s.SegmentationID] = true
		}
	}
	for id, until := range res {
		if !until.IsZero() && now.After(until) {
			delete(res, id)
			continue
		}
		used[id] = true
	}
	free := make([]int, 0, MaxVLAN)
	for id := MinVLAN; id <= MaxVLAN; id++ {
		if !used[id] {
			free = append(free, id)
		}
	}
	if len(free) < n {
		return nil, fmt.Errorf("%w: %d needed, %d free", ErrNoFreeVLAN, n, len(free))
	}
	out := make([]int, n)
	for i := range n { // partial Fisher-Yates
		j := i + rand.IntN(len(free)-i)
		free[i], free[j] = free[j], free[i]
		out[i] = free[i]
		res[free[i]] = time.Time{}
	}
	return out, nil
}

func (v *vlanReservations) hold(trunkID string, ids []int, until time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, id := range ids {
		v.m[trunkID][id] = until
	}
}

func (v *vlanReservations) release(trunkID string, ids []int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, id := range ids {
		delete(v.m[trunkID], id)
	}
}
