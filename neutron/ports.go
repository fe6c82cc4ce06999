package neutron

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/kuryr-pools/kuryr/pool"
	"k8s.io/klog/v2"
)

// Port is a Neutron port with the attributes kuryr reads.
type Port struct {
	ID             string          `json:"id"`
	Name           string          `json:"name"`
	NetworkID      string          `json:"network_id"`
	ProjectID      string          `json:"project_id"`
	MACAddress     string          `json:"mac_address"`
	FixedIPs       []PortIP        `json:"fixed_ips"`
	DeviceID       string          `json:"device_id"`
	DeviceOwner    string          `json:"device_owner"`
	Status         string          `json:"status"`
	AdminStateUp   bool            `json:"admin_state_up"`
	SecurityGroups []string        `json:"security_groups"`
	Tags           []string        `json:"tags"`
	RevisionNumber int             `json:"revision_number"`
	HostID         string          `json:"binding:host_id"`
	VIFType        string          `json:"binding:vif_type"`
	VIFDetails     pool.VIFDetails `json:"binding:vif_details"`
	VNICType       string          `json:"binding:vnic_type"`
	TrunkDetails   *TrunkDetails   `json:"trunk_details,omitempty"`
}

// PortIP is one fixed IP of a port.
type PortIP struct {
	SubnetID  string `json:"subnet_id"`
	IPAddress string `json:"ip_address"`
}

// TrunkDetails is the trunk_details of a trunk's parent port.
type TrunkDetails struct {
	TrunkID  string    `json:"trunk_id"`
	SubPorts []Subport `json:"sub_ports"`
}

// HasTags reports whether the port carries every one of tags.
func (p Port) HasTags(tags ...string) bool {
	for _, t := range tags {
		if !slices.Contains(p.Tags, t) {
			return false
		}
	}
	return true
}

// PortSpec is the body of one port to create.
type PortSpec struct {
	NetworkID   string
	ProjectID   string
	SubnetIDs   []string // one fixed IP from each subnet, in order
	Name        string
	DeviceOwner string
	DeviceID    string
	HostID      string // binding:host_id (bare metal)
	// SecurityGroups: nil or empty leaves Neutron's choice (the project's default group).
	SecurityGroups []string
	Tags           []string
}

func (s PortSpec) body(withTags bool) map[string]any {
	b := map[string]any{
		"network_id":     s.NetworkID,
		"admin_state_up": true,
	}
	if s.ProjectID != "" {
		b["project_id"] = s.ProjectID
	}
	if s.Name != "" {
		b["name"] = s.Name
	}
	if s.DeviceOwner != "" {
		b["device_owner"] = s.DeviceOwner
	}
	if s.DeviceID != "" {
		b["device_id"] = s.DeviceID
	}
	if s.HostID != "" {
		b["binding:host_id"] = s.HostID
	}
	if len(s.SubnetIDs) > 0 {
		ips := make([]map[string]string, 0, len(s.SubnetIDs))
		for _, id := range s.SubnetIDs {
			ips = append(ips, map[string]string{"subnet_id": id})
		}
		b["fixed_ips"] = ips
	}
	if len(s.SecurityGroups) > 0 {
		b["security_groups"] = s.SecurityGroups
	}
	if withTags && len(s.Tags) > 0 {
		b["tags"] = s.Tags
	}
	return b
}

// BatchTagPrefix starts the tag CreatePorts gives every port of one bulk request.
const BatchTagPrefix = "kuryr-batch="

// Extensions used to choose between request forms.
const (
	extTagPortsDuringBulkCreation = "tag-ports-during-bulk-creation"
	extStandardAttrTag            = "standard-attr-tag"
)

// CreatePorts creates all specs in ONE bulk request (Neutron creates all or none) with their tags in
// that same request when the server has the tag-ports-during-bulk-creation extension. Without it
// (or if the server dropped them) the ports are tagged one by one right after, and on failure every
// port just created is deleted: no port is ever left untagged or half-created.
func (c *Client) CreatePorts(ctx context.Context, specs []PortSpec) ([]Port, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	tagsInBody, err := c.HasExtension(ctx, extTagPortsDuringBulkCreation)
	if err != nil {
		return nil, err
	}
	// A batch tag makes the outcome of an ambiguous failure (timeout, connection lost, 5xx: the
	// ports may exist) checkable with one filtered list, and the batch deletable exactly.
	batchTag := ""
	if tagsInBody {
		batchTag = BatchTagPrefix + randomHex(8)
	}
	body := make([]map[string]any, len(specs))
	for i, s := range specs {
		if s.NetworkID == "" {
			return nil, fmt.Errorf("create ports: spec %d has no network", i)
		}
		if batchTag != "" {
			s.Tags = append(slices.Clip(s.Tags), batchTag)
		}
		body[i] = s.body(tagsInBody)
	}
	var resp struct {
		Ports []Port `json:"ports"`
	}
	const op = "ports.bulk_create"
	_, err = c.sc.Post(withOp(ctx, op), c.sc.ServiceURL("ports"), map[string]any{"ports": body}, &resp,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusCreated}})
	if err != nil {
		err = fmt.Errorf("create %d ports: %w", len(specs), apiError(op, err))
		if batchTag != "" && ambiguous(err) {
			err = errors.Join(err, c.deleteBatch(ctx, batchTag))
			c.sweepLater(ctx, batchTag)
		}
		return nil, err
	}
	if len(resp.Ports) != len(specs) {
		created := resp.Ports
		cleanup := c.deleteCreated(ctx, created)
		return nil, errors.Join(fmt.Errorf("create ports: asked for %d, Neutron answered %d", len(specs), len(created)), cleanup)
	}
	// Tag the ports whose tags did not come back (no extension, or a server that ignores them).
	var tagErr error
	for i := range resp.Ports {
		want := specs[i].Tags
		if len(want) == 0 || resp.Ports[i].HasTags(want...) {
			continue
		}
		tags, err := c.SetPortTags(ctx, resp.Ports[i].ID, want)
		if err != nil {
			tagErr = fmt.Errorf("tag new port %s: %w", resp.Ports[i].ID, err)
			break
		}
		resp.Ports[i].Tags = tags
	}
	if tagErr != nil {
		return nil, errors.Join(tagErr, c.deleteCreated(ctx, resp.Ports))
	}
	return resp.Ports, nil
}

// deleteCreated removes ports a failed operation created. It runs even when ctx is cancelled:
// leaving them behind is the worse outcome.
func (c *Client) deleteCreated(ctx context.Context, created []Port) error {
	if len(created) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	ids := make([]string, len(created))
	for i, p := range created {
		ids[i] = p.ID
	}
	failed := c.DeletePorts(ctx, ids)
	if len(failed) == 0 {
		klog.FromContext(ctx).Info("Deleted the ports of a failed creation", "ports", ids)
		return nil
	}
	errs := make([]error, 0, len(failed))
	for id, err := range failed {
		errs = append(errs, fmt.Errorf("cleanup: port %s was left behind: %w", id, err))
	}
	return errors.Join(errs...)
}

// ambiguous tells whether a failed create may nevertheless have happened: a 5xx, or no answer at
// all (timeout, connection lost, caller cancelled while the request was in flight).
func ambiguous(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500
	}
	return true
}

// deleteBatch deletes the ports of a bulk create whose answer was lost.
func (c *Client) deleteBatch(ctx context.Context, batchTag string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	ps, err := c.ListPorts(ctx, PortFilter{Tags: []string{batchTag}})
	if err != nil {
		return fmt.Errorf("cleanup: find the ports of batch %s: %w", batchTag, err)
	}
	return c.deleteCreated(ctx, ps)
}

// sweepLater deletes the batch once more after a while: Neutron keeps working on a request the
// client gave up on, and its ports become visible only when its transaction commits, possibly
// after the first sweep. Ports it misses still carry the node tags (nested recovery deletes
// unattached ones; bare-metal ones are loaded as pool ports).
func (c *Client) sweepLater(ctx context.Context, batchTag string) {
	if c.sweepDelay <= 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	time.AfterFunc(c.sweepDelay, func() {
		if err := c.deleteBatch(ctx, batchTag); err != nil {
			klog.FromContext(ctx).Error(err, "Second sweep of a bulk create whose answer was lost", "batch", batchTag)
		}
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SetPortTags replaces the tags of a port (PUT /v2.0/ports/{id}/tags).
func (c *Client) SetPortTags(ctx context.Context, id string, tags []string) ([]string, error) {
	var resp struct {
		Tags []string `json:"tags"`
	}
	const op = "ports.set_tags"
	_, err := c.sc.Put(withOp(ctx, op), c.sc.ServiceURL("ports", id, "tags"), map[string]any{"tags": tags}, &resp,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusOK}})
	if err != nil {
		return nil, apiError(op, err)
	}
	return resp.Tags, nil
}

// GetPort reads one port.
func (c *Client) GetPort(ctx context.Context, id string) (Port, error) {
	var resp struct {
		Port Port `json:"port"`
	}
	const op = "ports.get"
	_, err := c.sc.Get(withOp(ctx, op), c.sc.ServiceURL("ports", id), &resp, nil)
	if err != nil {
		return Port{}, fmt.Errorf("get port %s: %w", id, apiError(op, err))
	}
	return resp.Port, nil
}

// PortUpdate holds the attributes to change; nil fields are left as they are.
type PortUpdate struct {
	Name           *string
	DeviceID       *string
	DeviceOwner    *string
	HostID         *string
	SecurityGroups *[]string
}

// UpdatePort changes a port. With revision > 0 the update is conditional (If-Match): when the
// port changed since that revision Neutron answers 412 and the error matches ErrRevisionMismatch.
func (c *Client) UpdatePort(ctx context.Context, id string, revision int, u PortUpdate) (Port, error) {
	b := map[string]any{}
	if u.Name != nil {
		b["name"] = *u.Name
	}
	if u.DeviceID != nil {
		b["device_id"] = *u.DeviceID
	}
	if u.DeviceOwner != nil {
		b["device_owner"] = *u.DeviceOwner
	}
	if u.HostID != nil {
		b["binding:host_id"] = *u.HostID
	}
	if u.SecurityGroups != nil {
		b["security_groups"] = *u.SecurityGroups
		if *u.SecurityGroups == nil {
			b["security_groups"] = []string{}
		}
	}
	opts := &gophercloud.RequestOpts{OkCodes: []int{http.StatusOK}}
	if revision > 0 {
		opts.MoreHeaders = map[string]string{"If-Match": "revision_number=" + strconv.Itoa(revision)}
	}
	var resp struct {
		Port Port `json:"port"`
	}
	const op = "ports.update"
	_, err := c.sc.Put(withOp(ctx, op), c.sc.ServiceURL("ports", id), map[string]any{"port": b}, &resp, opts)
	if err != nil {
		return Port{}, fmt.Errorf("update port %s: %w", id, apiError(op, err))
	}
	return resp.Port, nil
}

// subportOfTrunk finds the trunk in Neutron's "Port X is currently a subport for trunk T." answer.
var subportOfTrunk = regexp.MustCompile(`currently a subport for trunk ([0-9a-fA-F-]{36})`)

// DeletePort deletes a port; a port already gone counts as deleted. A port that is still a subport
// is detached from its trunk and deleted again (kuryr's delete_port does the same).
func (c *Client) DeletePort(ctx context.Context, id string) error {
	err := c.deletePort(ctx, id)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusConflict {
		if m := subportOfTrunk.FindStringSubmatch(ae.Message); m != nil {
			if rerr := c.RemoveSubports(ctx, m[1], []string{id}); rerr != nil {
				return fmt.Errorf("delete port %s: detach from trunk %s: %w", id, m[1], rerr)
			}
			err = c.deletePort(ctx, id)
		}
	}
	if err != nil {
		return fmt.Errorf("delete port %s: %w", id, err)
	}
	return nil
}

func (c *Client) deletePort(ctx context.Context, id string) error {
	const op = "ports.delete"
	_, err := c.sc.Delete(withOp(ctx, op), c.sc.ServiceURL("ports", id), nil)
	if err = apiError(op, err); errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// DeletePorts deletes ports with bounded concurrency (404 counts as done) and returns the ports it
// could not delete with the reason.
func (c *Client) DeletePorts(ctx context.Context, ids []string) map[string]error {
	var (
		mu     sync.Mutex
		failed = map[string]error{}
		wg     sync.WaitGroup
		slots  = make(chan struct{}, defaultDeleteConcurrency)
	)
	for _, id := range slices.Compact(slices.Sorted(slices.Values(ids))) {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			if err := c.DeletePort(ctx, id); err != nil {
				mu.Lock()
				failed[id] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed
}

// PortFilter selects ports in ListPorts. Empty fields do not filter.
type PortFilter struct {
	DeviceOwners []string // any of
	HostID       string   // binding:host_id
	Tags         []string // all of
	ProjectID    string
	NetworkID    string
	Status       string
	Name         string
	FixedIP      string // fixed_ips=ip_address=<ip>
	IDs          []string
	PageSize     int // limit per request (0: the client's list_page_size; one request if that is 0 too)
}

// ToPortListQuery is the query string of a listing of the ports f selects.
func (f PortFilter) ToPortListQuery() (string, error) {
	q := url.Values{}
	for _, o := range f.DeviceOwners {
		q.Add("device_owner", o)
	}
	for _, id := range f.IDs {
		q.Add("id", id)
	}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("binding:host_id", f.HostID)
	set("project_id", f.ProjectID)
	set("network_id", f.NetworkID)
	set("status", f.Status)
	set("name", f.Name)
	if f.FixedIP != "" {
		q.Set("fixed_ips", "ip_address="+f.FixedIP)
	}
	if len(f.Tags) > 0 {
		tags := ""
		for i, t := range f.Tags {
			if i > 0 {
				tags += ","
			}
			tags += t
		}
		q.Set("tags", tags)
	}
	if f.PageSize > 0 {
		q.Set("limit", strconv.Itoa(f.PageSize))
	}
	return "?" + q.Encode(), nil
}

// ListPorts returns every port matching f, following Neutron's pagination (one request per page).
func (c *Client) ListPorts(ctx context.Context, f PortFilter) ([]Port, error) {
	var out []Port
	err := c.EachPortPage(ctx, f, func(page []Port) error {
		out = append(out, page...)
		return nil
	})
	return out, err
}

// EachPortPage calls fn with each page of the ports matching f, following the pages' next links.
// Without a page size (f.PageSize and the client's list_page_size both 0) the listing is one
// request whatever the number of ports.
func (c *Client) EachPortPage(ctx context.Context, f PortFilter, fn func([]Port) error) error {
	const op = "ports.list"
	if f.PageSize == 0 {
		f.PageSize = c.listPageSize
	}
	q, _ := f.ToPortListQuery()
	for next := c.sc.ServiceURL("ports") + q; next != ""; {
		var page []Port
		var err error
		page, next, err = c.portPage(withOp(ctx, op), next)
		if err != nil {
			return fmt.Errorf("list ports: %w", apiError(op, err))
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

// portPage reads one page of a port listing, decoding the ports one at a time as the answer
// streams in: the memory a listing takes is its ports', not its JSON text's (gophercloud's pager
// decodes a whole page into maps first, which made most of the agent's garbage at start-up).
func (c *Client) portPage(ctx context.Context, url string) (page []Port, next string, err error) {
	resp, err := c.sc.Get(ctx, url, nil, &gophercloud.RequestOpts{KeepResponseBody: true, OkCodes: []int{http.StatusOK}})
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	dec := json.NewDecoder(resp.Body)
	if err := expectDelim(dec, '{'); err != nil {
		return nil, "", err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, "", fmt.Errorf("decode port listing: %w", err)
		}
		switch key {
		case "ports":
			if err := expectDelim(dec, '['); err != nil {
				return nil, "", err
			}
			for dec.More() {
				var p Port
				if err := dec.Decode(&p); err != nil {
					return nil, "", fmt.Errorf("decode port listing: %w", err)
				}
				page = append(page, p)
			}
			if err := expectDelim(dec, ']'); err != nil {
				return nil, "", err
			}
		case "ports_links":
			var links []struct{ Href, Rel string }
			if err := dec.Decode(&links); err != nil {
				return nil, "", fmt.Errorf("decode port listing links: %w", err)
			}
			for _, l := range links {
				if l.Rel == "next" {
					next = l.Href
				}
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, "", fmt.Errorf("decode port listing: %w", err)
			}
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, "", err
	}
	if next != "" && len(page) == 0 {
		next = "" // an empty page that still links on would loop
	}
	return page, next, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("decode port listing: %w", err)
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return fmt.Errorf("decode port listing: got %v, want %q", t, want)
	}
	return nil
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
