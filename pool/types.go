// Package pool is the pool engine: which Neutron port is free, in use, cooling, being recycled or
// deleted, and what the drivers must create or delete next. The engine itself does no I/O and reads
// time only through an injected Clock, so every rule is testable and deterministic; the drivers in
// this package carry out its plans through a Backend.
package pool

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Key identifies a pool: kuryr's (host, project, network). Node is the trunk parent IP (nested) or
// the node name (bare metal).
type Key struct {
	Node    string `json:"node"`
	Project string `json:"project"`
	Network string `json:"network"`
}

// String is the JSON array form kuryr's listPools prints: ["10.0.0.6", "project", "network"].
func (k Key) String() string {
	b, _ := json.Marshal([]string{k.Node, k.Project, k.Network})
	return string(b)
}

// SGSet is a canonical security-group set: IDs sorted, de-duplicated and joined with ",".
// The empty set is "".
type SGSet string

// NewSGSet builds the canonical set of ids; empty IDs are dropped.
func NewSGSet(ids ...string) SGSet {
	s := make([]string, 0, len(ids))
	for _, id := range ids {
		if id = strings.TrimSpace(id); id != "" {
			s = append(s, id)
		}
	}
	slices.Sort(s)
	return SGSet(strings.Join(slices.Compact(s), ","))
}

// IDs returns the security-group IDs of the set, sorted.
func (s SGSet) IDs() []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(string(s), ",")
}

// FixedIP is one address of a port.
type FixedIP struct {
	SubnetID string `json:"subnetId"`
	IP       string `json:"ip"`
}

// Port is everything the agent needs to plug a pooled port without asking Neutron.
type Port struct {
	ID         string     `json:"id"`
	Key        Key        `json:"key"`
	SGs        SGSet      `json:"sgs"`
	MAC        string     `json:"mac"`
	FixedIPs   []FixedIP  `json:"fixedIps"`
	VLAN       int        `json:"vlan,omitempty"`    // segmentation ID on the trunk (nested)
	TrunkID    string     `json:"trunkId,omitempty"` // nested
	Status     string     `json:"status,omitempty"`  // Neutron status when last seen
	VIFType    string     `json:"vifType,omitempty"` // binding:vif_type
	VIFDetails VIFDetails `json:"vifDetails,omitzero"`
}

// VIFDetails is the part of a port's binding:vif_details the agent plugs with. The JSON names are
// Neutron's, so a checkpoint written when this was the whole map still loads.
type VIFDetails struct {
	BridgeName string `json:"bridge_name,omitempty"` // the OVS bridge to plug into (vif_type ovs)
}

// State is where a port is in its pool life cycle.
type State string

// The states a port known to the engine can be in; each port is in exactly one.
const (
	StateFree      State = "free"
	StateInUse     State = "in-use"
	StateCooling   State = "cooling"   // released, waiting out the cooldown
	StateRecycling State = "recycling" // cooled; the driver is resetting it in Neutron
	StateDeleting  State = "deleting"  // marked for deletion; the driver deletes it
)

// Limits are the [vif_pool] settings. Max 0 means no limit; IdleTimeout 0 never removes idle ports.
type Limits struct {
	Min, Max, Batch int
	Cooldown        time.Duration
	IdleTimeout     time.Duration
}

// Stats counts the ports of one pool by state, plus creations in flight and pods waiting.
type Stats struct {
	Free, InUse, Cooling, Recycling, Deleting, InFlight, Waiting int
}

// Clock is the engine's only source of time.
type Clock interface{ Now() time.Time }

// RealClock reads the system clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }
