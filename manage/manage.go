// Package manage is the pool management API of the agent: kuryr's pool manager endpoints on a
// unix socket (/populatePool, /freePool, /listPools, /showPool), their request bodies, the text
// answers operators know from kuryr, and the client kuryr-pools uses.
package manage

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The endpoints, as kuryr named them.
const (
	PathPopulate = "/populatePool"
	PathFree     = "/freePool"
	PathList     = "/listPools"
	PathShow     = "/showPool"
)

// DefaultSocketPath is [pool_manager] sock_file's default.
const DefaultSocketPath = "/run/kuryr/kuryr_manage.sock"

// MaxPopulate bounds num_ports in one request: more than a trunk can carry is a typo, not a wish.
const MaxPopulate = 4094

// PopulateRequest is the body of POST /populatePool.
type PopulateRequest struct {
	Trunks   []string `json:"trunks"`
	NumPorts *int     `json:"num_ports,omitempty"` // default 1, as kuryr
	// Force populates past ports_pool_max (kuryr always did; here it must be asked for).
	Force bool `json:"force,omitempty"`
}

// FreeRequest is the body of POST /freePool; no trunks means every pool of this node.
type FreeRequest struct {
	Trunks []string `json:"trunks,omitempty"`
}

// ShowRequest is the body of GET /showPool. PoolKey is kuryr's [trunk_ip, project_id,
// [security_groups]], or its later [trunk_ip, project_id, network_id]; bare-metal pools are
// addressed by node name in place of the trunk IP.
type ShowRequest struct {
	PoolKey []json.RawMessage `json:"pool_key"`
}

// PoolKey is a parsed showPool key.
type PoolKey struct {
	Node      string
	Project   string
	Network   string   // set for the [ip, project, network] form
	SGs       []string // set for the [ip, project, [sgs]] form
	HasSGList bool
}

// InvalidPoolKey is kuryr's message for a malformed showPool key.
const InvalidPoolKey = "Invalid pool key. Proper format is:\n[trunk_ip, project_id, [security_groups]]\n"

// ParsePoolKey validates a showPool key.
func ParsePoolKey(raw []json.RawMessage) (PoolKey, error) {
	if len(raw) != 3 {
		return PoolKey{}, fmt.Errorf("pool key has %d elements, want 3", len(raw))
	}
	var k PoolKey
	if err := json.Unmarshal(raw[0], &k.Node); err != nil || k.Node == "" {
		return PoolKey{}, fmt.Errorf("pool key: trunk IP or node name must be a non-empty string")
	}
	if err := json.Unmarshal(raw[1], &k.Project); err != nil || k.Project == "" {
		return PoolKey{}, fmt.Errorf("pool key: project ID must be a non-empty string")
	}
	if err := json.Unmarshal(raw[2], &k.SGs); err == nil {
		k.HasSGList = true
		return k, nil
	}
	if err := json.Unmarshal(raw[2], &k.Network); err != nil || k.Network == "" {
		return PoolKey{}, fmt.Errorf("pool key: third element must be a list of security groups or a network ID")
	}
	return k, nil
}

// PyList renders strings as Python's repr of a list: ['a', 'b'] (kuryr's messages print lists so).
func PyList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = "'" + s + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// PyTuple renders strings as Python's repr of a tuple: ('a', 'b'), ('a',) for one.
func PyTuple(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = "'" + s + "'"
	}
	if len(q) == 1 {
		return "(" + q[0] + ",)"
	}
	return "(" + strings.Join(q, ", ") + ")"
}

// PyJSON renders a pool key as Python's json.dumps does: ["a", "b", "c"] with ", " separators.
func PyJSON(items ...string) string {
	q := make([]string, len(items))
	for i, s := range items {
		b, _ := json.Marshal(s)
		q[i] = string(b)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// Pool is one pool in a JSON answer.
type Pool struct {
	Node     string   `json:"node"`
	Project  string   `json:"project"`
	Network  string   `json:"network"`
	Free     int      `json:"free"`
	InUse    int      `json:"inUse"`
	Cooling  int      `json:"cooling"`
	InFlight int      `json:"inFlight"`
	PortIDs  []string `json:"portIds,omitempty"`
	SGSets   []string `json:"securityGroupSets,omitempty"`
}

// Answer is the JSON form of every answer (Accept: application/json); Message is the text form.
type Answer struct {
	Message string   `json:"message"`
	Error   string   `json:"error,omitempty"`
	Created *int     `json:"created,omitempty"`
	Refused *int     `json:"refused,omitempty"`
	Deleted *int     `json:"deleted,omitempty"`
	Pools   []Pool   `json:"pools,omitempty"`
	PortIDs []string `json:"portIds,omitempty"`
}
