package neutron

import (
	"context"
	"fmt"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Subnet is what plugging a pod needs from a subnet.
type Subnet struct {
	ID             string      `json:"id"`
	Name           string      `json:"name"`
	NetworkID      string      `json:"network_id"`
	ProjectID      string      `json:"project_id"`
	CIDR           string      `json:"cidr"`
	GatewayIP      string      `json:"gateway_ip"`
	IPVersion      int         `json:"ip_version"`
	DNSNameservers []string    `json:"dns_nameservers"`
	HostRoutes     []HostRoute `json:"host_routes"`
}

// HostRoute is one of a subnet's host_routes.
type HostRoute struct {
	Destination string `json:"destination"`
	NextHop     string `json:"nexthop"`
}

// Network is what plugging a pod needs from a network.
type Network struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	ProjectID string `json:"project_id"`
	MTU       int    `json:"mtu"`
	Status    string `json:"status"`
}

// SubnetDetails is a subnet with the MTU of its network.
type SubnetDetails struct {
	Subnet
	MTU int
}

// Subnet reads a subnet, from the cache when it is younger than the client's SubnetCacheTTL.
func (c *Client) Subnet(ctx context.Context, id string) (Subnet, error) {
	if s, ok := cacheGet(c, c.subnets, id); ok {
		return s, nil
	}
	var resp struct {
		Subnet Subnet `json:"subnet"`
	}
	const op = "subnets.get"
	if _, err := c.sc.Get(withOp(ctx, op), c.sc.ServiceURL("subnets", id), &resp, nil); err != nil {
		return Subnet{}, fmt.Errorf("get subnet %s: %w", id, apiError(op, err))
	}
	cachePut(c, c.subnets, id, resp.Subnet)
	return resp.Subnet, nil
}

// Network reads a network, from the cache when it is younger than the client's SubnetCacheTTL.
func (c *Client) Network(ctx context.Context, id string) (Network, error) {
	if n, ok := cacheGet(c, c.networks, id); ok {
		return n, nil
	}
	var resp struct {
		Network Network `json:"network"`
	}
	const op = "networks.get"
	if _, err := c.sc.Get(withOp(ctx, op), c.sc.ServiceURL("networks", id), &resp, nil); err != nil {
		return Network{}, fmt.Errorf("get network %s: %w", id, apiError(op, err))
	}
	cachePut(c, c.networks, id, resp.Network)
	return resp.Network, nil
}

// SubnetDetails is the subnet with its network's MTU (two cached reads).
func (c *Client) SubnetDetails(ctx context.Context, id string) (SubnetDetails, error) {
	s, err := c.Subnet(ctx, id)
	if err != nil {
		return SubnetDetails{}, err
	}
	n, err := c.Network(ctx, s.NetworkID)
	if err != nil {
		return SubnetDetails{}, fmt.Errorf("subnet %s: %w", id, err)
	}
	return SubnetDetails{Subnet: s, MTU: n.MTU}, nil
}

// ForgetSubnet drops a subnet from the cache (e.g. after Neutron said it is gone).
func (c *Client) ForgetSubnet(id string) {
	c.cacheMu.Lock()
	delete(c.subnets, id)
	c.cacheMu.Unlock()
}

func cacheGet[T any](c *Client, m map[string]cached[T], id string) (T, bool) {
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()
	e, ok := m[id]
	if !ok || c.now().Sub(e.at) > c.subnetTTL {
		var zero T
		return zero, false
	}
	return e.v, true
}

func cachePut[T any](c *Client, m map[string]cached[T], id string, v T) {
	c.cacheMu.Lock()
	m[id] = cached[T]{v: v, at: c.now()}
	c.cacheMu.Unlock()
}

// Extensions returns the aliases of the server's API extensions, read once per client.
func (c *Client) Extensions(ctx context.Context) (map[string]bool, error) {
	c.extMu.Lock()
	defer c.extMu.Unlock()
	if c.ext != nil {
		return c.ext, nil
	}
	ext := map[string]bool{}
	const op = "extensions.list"
	err := extensions.List(c.sc).EachPage(withOp(ctx, op), func(_ context.Context, page pagination.Page) (bool, error) {
		es, err := extensions.ExtractExtensions(page)
		for _, e := range es {
			ext[e.Alias] = true
		}
		return true, err
	})
	if err != nil {
		return nil, fmt.Errorf("list extensions: %w", apiError(op, err))
	}
	c.ext = ext
	return ext, nil
}

// HasExtension reports whether the server has the API extension alias.
func (c *Client) HasExtension(ctx context.Context, alias string) (bool, error) {
	ext, err := c.Extensions(ctx)
	return ext[alias], err
}
