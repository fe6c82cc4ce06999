package pool

import "context"

// Port names and owners kuryr uses in Neutron.
const (
	// AvailablePortName names a pooled port that no pod uses.
	AvailablePortName = "available-port"
	// DeletingPortName names a port the agent is deleting; Recover never hands one out.
	DeletingPortName = "kuryr-deleting-port"
	// DeviceOwnerKuryr is the device_owner of bare-metal pool ports (and of nested ports before
	// ML2 rewrites it to DeviceOwnerSubport on attach).
	DeviceOwnerKuryr = "compute:kuryr"
	// DeviceOwnerSubport is what ML2/OVS sets on a port attached to a trunk.
	DeviceOwnerSubport = "trunk:subport"
)

// CreateRequest asks a Backend for Count new pool ports of one pool.
type CreateRequest struct {
	Key       Key
	SubnetIDs []string // fixed_ips subnets; the first one gives the port its address
	SGs       SGSet
	Count     int
}

// ListedPort is a port found in Neutron for this node's pools, with what recovery needs to decide
// whether it is free, in use or to be removed.
type ListedPort struct {
	Port
	Name        string
	DeviceID    string
	DeviceOwner string
	Tags        []string
	// Attached is true for a nested port that is a subport of this node's trunk (always true for
	// bare metal ports, which have no trunk).
	Attached bool
}

// Backend is everything a pool driver needs from a cloud for the pools of one node. Implementations
// live in package neutron (nested: subports of the node's trunk; bare metal: ports bound to the node).
// Every method is safe for concurrent use.
type Backend interface {
	// CreatePorts creates req.Count ports in one bulk request, named AvailablePortName and tagged
	// (cluster, node, resource_tags) in that same request; a nested backend then attaches all of them
	// to the node's trunk in one add_subports call with VLAN IDs free on that trunk, retrying on a
	// VLAN clash. It is all or nothing: on error no port it created is left behind.
	CreatePorts(ctx context.Context, req CreateRequest) ([]Port, error)
	// DeletePorts detaches (nested) and deletes the ports; a port already gone counts as deleted.
	// It returns the ports it could not delete, with the reason.
	DeletePorts(ctx context.Context, ports []Port) map[string]error
	// ResetPort gives a recycled port its pool identity back: name AvailablePortName, device_id "".
	// A port that no longer exists gives an error that Is ErrPortGone.
	ResetPort(ctx context.Context, p Port) error
	// UpdateSGs rewrites the security groups of a port, failing rather than overwriting a concurrent
	// change (revision_number / If-Match).
	UpdateSGs(ctx context.Context, p Port, sgs SGSet) error
	// MarkInUse records the pod on the port: name "<namespace>/<pod>" and device_id.
	MarkInUse(ctx context.Context, p Port, name, deviceID string) error
	// ListPorts returns every port of this node's pools that exists in Neutron (pre-created ones
	// included) with a constant number of list requests, whatever the number of ports.
	ListPorts(ctx context.Context) ([]ListedPort, error)
	// Node is the pool key's Node for this backend: the trunk parent IP (nested) or the node name.
	Node() string
}
