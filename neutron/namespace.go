package neutron

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/trunks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// This file holds the calls of the namespace subnet driver (kuryr's namespace_subnet.py) and of the
// controller's garbage collection: networks, subnets from a subnet pool, router interfaces, tags
// on networks and subnets, and trunk listing.

// ListedNetwork is a network as listed, with what finding a namespace's network needs.
type ListedNetwork struct {
	Network
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Subnets     []string `json:"subnets"`
}

// ListedSubnet is a subnet as listed, with its pool and tags.
type ListedSubnet struct {
	Subnet
	Description  string   `json:"description"`
	SubnetPoolID string   `json:"subnetpool_id"`
	Tags         []string `json:"tags"`
}

// SubnetPool is a Neutron subnet pool ([namespace_subnet] pod_subnet_pool).
type SubnetPool struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	ProjectID        string   `json:"project_id"`
	IPVersion        int      `json:"ip_version"`
	Prefixes         []string `json:"prefixes"`
	DefaultPrefixLen flexInt  `json:"default_prefixlen"`
	Tags             []string `json:"tags"`
}

// flexInt decodes a number Neutron may send as a JSON string (subnet pools' prefix lengths are
// strings on the Zed server: "default_prefixlen": "24").
type flexInt int

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*f = 0
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not an integer: %s", b)
	}
	*f = flexInt(n)
	return nil
}

// NetworkSpec is the body of a network to create.
type NetworkSpec struct {
	Name        string
	Description string // kuryr puts the namespace UID here, to find the network again
	ProjectID   string
}

// SubnetSpec is the body of a subnet to create from a subnet pool (or with a CIDR).
type SubnetSpec struct {
	Name         string
	Description  string
	NetworkID    string
	ProjectID    string
	SubnetPoolID string // the prefix is allocated from this pool
	IPVersion    int    // must match the pool's
	PrefixLen    int    // 0: the pool's default_prefixlen
	CIDR         string // instead of a pool
}

// NetworkFilter selects networks in ListNetworks. Empty fields do not filter.
type NetworkFilter struct {
	Name        string
	Description string
	ProjectID   string
	Tags        []string // all of
	IDs         []string
}

// SubnetFilter selects subnets in ListSubnets. Empty fields do not filter.
type SubnetFilter struct {
	NetworkID    string
	Name         string
	SubnetPoolID string
	ProjectID    string
	Tags         []string // all of
}

// TrunkFilter selects trunks in ListTrunks. Empty fields do not filter.
type TrunkFilter struct {
	Tags     []string // all of
	PageSize int
}

func listQuery(set map[string]string, multi map[string][]string, tags []string, pageSize int) string {
	q := url.Values{}
	for k, v := range set {
		if v != "" {
			q.Set(k, v)
		}
	}
	for k, vs := range multi {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	if len(tags) > 0 {
		q.Set("tags", strings.Join(tags, ","))
	}
	if pageSize <= 0 {
		pageSize = defaultListPageSize
	}
	q.Set("limit", strconv.Itoa(pageSize))
	return "?" + q.Encode()
}

// ToNetworkListQuery makes NetworkFilter a gophercloud networks.ListOptsBuilder.
func (f NetworkFilter) ToNetworkListQuery() (string, error) {
	return listQuery(map[string]string{"name": f.Name, "description": f.Description, "project_id": f.ProjectID},
		map[string][]string{"id": f.IDs}, f.Tags, 0), nil
}

// ToSubnetListQuery makes SubnetFilter a gophercloud subnets.ListOptsBuilder.
func (f SubnetFilter) ToSubnetListQuery() (string, error) {
	return listQuery(map[string]string{"network_id": f.NetworkID, "name": f.Name,
		"subnetpool_id": f.SubnetPoolID, "project_id": f.ProjectID}, nil, f.Tags, 0), nil
}

// ToTrunkListQuery makes TrunkFilter a gophercloud trunks.ListOptsBuilder.
func (f TrunkFilter) ToTrunkListQuery() (string, error) {
	return listQuery(nil, nil, f.Tags, f.PageSize), nil
}

// ListNetworks returns every network matching f (one request per page).
func (c *Client) ListNetworks(ctx context.Context, f NetworkFilter) ([]ListedNetwork, error) {
	var out []ListedNetwork
	const op = "networks.list"
	err := networks.List(c.sc, f).EachPage(withOp(ctx, op), func(_ context.Context, page pagination.Page) (bool, error) {
		var ns []ListedNetwork
		if err := decodePage(page.(networks.NetworkPage).Body, "networks", &ns); err != nil {
			return false, err
		}
		out = append(out, ns...)
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", apiError(op, err))
	}
	return out, nil
}

// CreateNetwork creates a network. Neutron refuses tags in a network's create body ("Attribute
// 'tags' not allowed in POST"): tag it with SetNetworkTags afterwards.
func (c *Client) CreateNetwork(ctx context.Context, s NetworkSpec) (ListedNetwork, error) {
	b := map[string]any{"name": s.Name, "admin_state_up": true}
	if s.Description != "" {
		b["description"] = s.Description
	}
	if s.ProjectID != "" {
		b["project_id"] = s.ProjectID
	}
	var resp struct {
		Network ListedNetwork `json:"network"`
	}
	const op = "networks.create"
	_, err := c.sc.Post(withOp(ctx, op), c.sc.ServiceURL("networks"), map[string]any{"network": b}, &resp,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusCreated}})
	if err != nil {
		return ListedNetwork{}, fmt.Errorf("create network %q: %w", s.Name, apiError(op, err))
	}
	return resp.Network, nil
}

// DeleteNetwork deletes a network and its subnets; a network already gone counts as deleted. A
// network that still has ports fails with ErrConflict (NetworkInUse).
func (c *Client) DeleteNetwork(ctx context.Context, id string) error {
	const op = "networks.delete"
	_, err := c.sc.Delete(withOp(ctx, op), c.sc.ServiceURL("networks", id), nil)
	if err = apiError(op, err); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete network %s: %w", id, err)
	}
	c.cacheMu.Lock()
	delete(c.networks, id)
	c.cacheMu.Unlock()
	return nil
}

// SetNetworkTags replaces the tags of a network.
func (c *Client) SetNetworkTags(ctx context.Context, id string, tags []string) error {
	return c.setTags(ctx, "networks", id, tags)
}

// SetSubnetTags replaces the tags of a subnet.
func (c *Client) SetSubnetTags(ctx context.Context, id string, tags []string) error {
	return c.setTags(ctx, "subnets", id, tags)
}

func (c *Client) setTags(ctx context.Context, collection, id string, tags []string) error {
	if err := validateTags(tags); err != nil {
		return fmt.Errorf("tag %s %s: %w", collection, id, err)
	}
	if tags == nil {
		tags = []string{}
	}
	op := collection + ".set_tags"
	_, err := c.sc.Put(withOp(ctx, op), c.sc.ServiceURL(collection, id, "tags"), map[string]any{"tags": tags}, nil,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusOK}})
	if err != nil {
		return fmt.Errorf("tag %s %s: %w", strings.TrimSuffix(collection, "s"), id, apiError(op, err))
	}
	return nil
}

// ListSubnets returns every subnet matching f (one request per page).
func (c *Client) ListSubnets(ctx context.Context, f SubnetFilter) ([]ListedSubnet, error) {
	var out []ListedSubnet
	const op = "subnets.list"
	err := subnets.List(c.sc, f).EachPage(withOp(ctx, op), func(_ context.Context, page pagination.Page) (bool, error) {
		var ss []ListedSubnet
		if err := decodePage(page.(subnets.SubnetPage).Body, "subnets", &ss); err != nil {
			return false, err
		}
		out = append(out, ss...)
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list subnets: %w", apiError(op, err))
	}
	return out, nil
}

// CreateSubnet creates a subnet, its prefix allocated from s.SubnetPoolID unless s.CIDR is given.
// An exhausted pool fails with Neutron's SubnetAllocationError (HTTP 409 or 400 depending on the
// release; the APIError carries the type).
func (c *Client) CreateSubnet(ctx context.Context, s SubnetSpec) (ListedSubnet, error) {
	if s.NetworkID == "" {
		return ListedSubnet{}, fmt.Errorf("create subnet %q: no network", s.Name)
	}
	if s.SubnetPoolID == "" && s.CIDR == "" {
		return ListedSubnet{}, fmt.Errorf("create subnet %q: neither a subnet pool nor a CIDR", s.Name)
	}
	ver := s.IPVersion
	if ver == 0 {
		ver = 4
	}
	b := map[string]any{"network_id": s.NetworkID, "ip_version": ver}
	set := func(k, v string) {
		if v != "" {
			b[k] = v
		}
	}
	set("name", s.Name)
	set("description", s.Description)
	set("project_id", s.ProjectID)
	set("subnetpool_id", s.SubnetPoolID)
	set("cidr", s.CIDR)
	if s.PrefixLen > 0 {
		b["prefixlen"] = s.PrefixLen
	}
	var resp struct {
		Subnet ListedSubnet `json:"subnet"`
	}
	const op = "subnets.create"
	_, err := c.sc.Post(withOp(ctx, op), c.sc.ServiceURL("subnets"), map[string]any{"subnet": b}, &resp,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusCreated}})
	if err != nil {
		from := "pool " + s.SubnetPoolID
		if s.CIDR != "" {
			from = s.CIDR
		}
		return ListedSubnet{}, fmt.Errorf("create subnet %q on network %s from %s: %w", s.Name, s.NetworkID, from, apiError(op, err))
	}
	return resp.Subnet, nil
}

// DeleteSubnet deletes a subnet; a subnet already gone counts as deleted.
func (c *Client) DeleteSubnet(ctx context.Context, id string) error {
	const op = "subnets.delete"
	_, err := c.sc.Delete(withOp(ctx, op), c.sc.ServiceURL("subnets", id), nil)
	if err = apiError(op, err); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete subnet %s: %w", id, err)
	}
	c.ForgetSubnet(id)
	return nil
}

// GetSubnetPool reads a subnet pool.
func (c *Client) GetSubnetPool(ctx context.Context, id string) (SubnetPool, error) {
	var resp struct {
		SubnetPool SubnetPool `json:"subnetpool"`
	}
	const op = "subnetpools.get"
	if _, err := c.sc.Get(withOp(ctx, op), c.sc.ServiceURL("subnetpools", id), &resp, nil); err != nil {
		return SubnetPool{}, fmt.Errorf("get subnet pool %s: %w", id, apiError(op, err))
	}
	return resp.SubnetPool, nil
}

// CreateSubnetPool creates a subnet pool (tests and tools; the controller only reads pools).
func (c *Client) CreateSubnetPool(ctx context.Context, name, projectID string, prefixes []string, defaultPrefixLen int) (SubnetPool, error) {
	b := map[string]any{"name": name, "prefixes": prefixes}
	if projectID != "" {
		b["project_id"] = projectID
	}
	if defaultPrefixLen > 0 {
		b["default_prefixlen"] = defaultPrefixLen
	}
	var resp struct {
		SubnetPool SubnetPool `json:"subnetpool"`
	}
	const op = "subnetpools.create"
	_, err := c.sc.Post(withOp(ctx, op), c.sc.ServiceURL("subnetpools"), map[string]any{"subnetpool": b}, &resp,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusCreated}})
	if err != nil {
		return SubnetPool{}, fmt.Errorf("create subnet pool %q: %w", name, apiError(op, err))
	}
	return resp.SubnetPool, nil
}

// DeleteSubnetPool deletes a subnet pool; one already gone counts as deleted. A pool that still
// has subnets fails with ErrConflict (SubnetPoolDeleteError).
func (c *Client) DeleteSubnetPool(ctx context.Context, id string) error {
	const op = "subnetpools.delete"
	_, err := c.sc.Delete(withOp(ctx, op), c.sc.ServiceURL("subnetpools", id), nil)
	if err = apiError(op, err); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete subnet pool %s: %w", id, err)
	}
	return nil
}

// RouterInterface is Neutron's answer to add/remove_router_interface.
type RouterInterface struct {
	RouterID  string `json:"id"`
	SubnetID  string `json:"subnet_id"`
	PortID    string `json:"port_id"`
	NetworkID string `json:"network_id"`
}

// AddRouterInterface attaches a subnet to a router ([namespace_subnet] pod_router). A subnet the
// router already has a port on counts as attached (kuryr's add_subnet_to_router does the same on
// Neutron's 400 "Router already has a port on subnet"); the returned interface then has no port.
func (c *Client) AddRouterInterface(ctx context.Context, routerID, subnetID string) (RouterInterface, error) {
	var ri RouterInterface
	const op = "routers.add_router_interface"
	_, err := c.sc.Put(withOp(ctx, op), c.sc.ServiceURL("routers", routerID, "add_router_interface"),
		map[string]any{"subnet_id": subnetID}, &ri, &gophercloud.RequestOpts{OkCodes: []int{http.StatusOK}})
	if err = apiError(op, err); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest && strings.Contains(ae.Message, "already has a port on subnet") {
			return RouterInterface{RouterID: routerID, SubnetID: subnetID}, nil
		}
		return RouterInterface{}, fmt.Errorf("attach subnet %s to router %s: %w", subnetID, routerID, err)
	}
	return ri, nil
}

// RemoveRouterInterface detaches a subnet from a router; a subnet not attached (404
// RouterInterfaceNotFoundForSubnet) or a router already gone counts as detached.
func (c *Client) RemoveRouterInterface(ctx context.Context, routerID, subnetID string) error {
	const op = "routers.remove_router_interface"
	_, err := c.sc.Put(withOp(ctx, op), c.sc.ServiceURL("routers", routerID, "remove_router_interface"),
		map[string]any{"subnet_id": subnetID}, nil, &gophercloud.RequestOpts{OkCodes: []int{http.StatusOK}})
	if err = apiError(op, err); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("detach subnet %s from router %s: %w", subnetID, routerID, err)
	}
	return nil
}

// ListTrunks returns every trunk matching f with their subports (one request per page).
func (c *Client) ListTrunks(ctx context.Context, f TrunkFilter) ([]Trunk, error) {
	var out []Trunk
	const op = "trunks.list"
	q, _ := f.ToTrunkListQuery()
	// gophercloud's TrunkPage does not follow Neutron's trunks_links: with a limit it would stop
	// after the first page. trunkPage does.
	pager := pagination.NewPager(c.sc, c.sc.ServiceURL("trunks")+q, func(r pagination.PageResult) pagination.Page {
		return trunkPage{trunks.TrunkPage{LinkedPageBase: pagination.LinkedPageBase{PageResult: r}}}
	})
	err := pager.EachPage(withOp(ctx, op), func(_ context.Context, page pagination.Page) (bool, error) {
		var ts []Trunk
		if err := page.(trunkPage).ExtractIntoSlicePtr(&ts, "trunks"); err != nil {
			return false, err
		}
		out = append(out, ts...)
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list trunks: %w", apiError(op, err))
	}
	return out, nil
}

type trunkPage struct{ trunks.TrunkPage }

func (p trunkPage) NextPageURL() (string, error) {
	var s struct {
		Links []gophercloud.Link `json:"trunks_links"`
	}
	if err := p.ExtractInto(&s); err != nil {
		return "", err
	}
	return gophercloud.ExtractNextURL(s.Links)
}

// decodePage decodes the collection key of a page body with encoding/json. gophercloud's
// ExtractIntoSlicePtr decodes the embedded struct of ListedNetwork/ListedSubnet on its own and
// drops the outer fields (description, tags).
func decodePage(body any, key string, v any) error {
	m, ok := body.(map[string]any)
	if !ok {
		return fmt.Errorf("list %s: unexpected page body %T", key, body)
	}
	b, err := json.Marshal(m[key])
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// DeletePortIf deletes a port only if its revision_number is still revision (If-Match): the GC
// deletes what it verified, never a port someone changed since it was listed. It fails with
// ErrRevisionMismatch when the port changed, and with ErrConflict while the port is a subport
// (detach it first); a port already gone counts as deleted.
func (c *Client) DeletePortIf(ctx context.Context, id string, revision int) error {
	const op = "ports.delete"
	opts := &gophercloud.RequestOpts{MoreHeaders: map[string]string{"If-Match": "revision_number=" + strconv.Itoa(revision)}}
	_, err := c.sc.Delete(withOp(ctx, op), c.sc.ServiceURL("ports", id), opts)
	if err = apiError(op, err); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete port %s at revision %d: %w", id, revision, err)
	}
	return nil
}

// SubportTrunks maps the ID of every subport of trunks to its trunk's ID.
func SubportTrunks(trunks []Trunk) map[string]string {
	m := map[string]string{}
	for _, t := range trunks {
		for _, s := range t.SubPorts {
			m[s.PortID] = t.ID
		}
	}
	return m
}
