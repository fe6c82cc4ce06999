// Package neutron is the Neutron adapter of kuryr-pools over gophercloud v2: bulk port creation
// with tags in the same request, the node's trunk and its subports, filtered paginated listing,
// updates guarded by revision_number, and the two pool.Backend implementations (nested: subports
// of the node's trunk; bare metal: ports bound to the node). Every HTTP request goes through one
// transport that applies a token bucket, a concurrency bound, metrics and a safe retry policy.
package neutron

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Client talks to one Neutron endpoint. It is safe for concurrent use.
type Client struct {
	sc      *gophercloud.ServiceClient
	project string // the project of the credentials (auth_type none: X-Project-Id), may be ""
	metrics *metrics
	tr      *transport

	subnetTTL time.Duration
	cacheMu   sync.Mutex
	subnets   map[string]cached[Subnet]
	networks  map[string]cached[Network]
	extMu     sync.Mutex
	ext       map[string]bool // extension aliases, read once

	vlans vlanReservations
	now   func() time.Time
	// listPageSize: the page size of port listings whose filter sets none (0: one request).
	listPageSize int
	// sweepDelay: when the second sweep of a lost bulk create runs (0: none).
	sweepDelay time.Duration
	// beforeAddSubports is a test hook run before each add_subports of AttachPorts.
	beforeAddSubports func(ctx context.Context, trunkID string, subs []Subport, attempt int)
}

type cached[T any] struct {
	v  T
	at time.Time
}

// NewClient builds a client from kuryr.conf [neutron] options and authenticates when the auth type
// needs Keystone. userAgent names the caller (e.g. "kuryr-agent/v1.2.3") and is sent first in the
// User-Agent header.
func NewClient(ctx context.Context, opts ClientOptions, userAgent string) (*Client, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return nil, err
	}

	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = max(o.MaxConcurrentRequests, 2)
	c := &Client{metrics: newMetrics(), subnetTTL: o.SubnetCacheTTL, now: time.Now, listPageSize: o.ListPageSize,
		sweepDelay: min(2*o.Timeout, 5*time.Minute),
		subnets:    map[string]cached[Subnet]{}, networks: map[string]cached[Network]{}}
	c.tr = &transport{next: base, metrics: c.metrics, maxRetries: o.MaxRetries, timeout: o.Timeout,
		backoff: defaultBackoff, retryAfterCap: defaultRetryAfterCap}
	if o.QPS > 0 {
		c.tr.limiter = rate.NewLimiter(rate.Limit(o.QPS), max(o.Burst, 1))
	}
	if o.MaxConcurrentRequests > 0 {
		c.tr.sem = make(chan struct{}, o.MaxConcurrentRequests)
	}
	// No http.Client.Timeout: it would count the time queued for the limiter; the transport
	// bounds each attempt instead.
	httpClient := http.Client{Transport: c.tr}
	base.TLSClientConfig = tlsCfg

	var pc *gophercloud.ProviderClient
	eo := gophercloud.EndpointOpts{Region: o.RegionName, Availability: o.endpointAvailability()}
	switch {
	case o.AuthType == AuthNone:
		pc = &gophercloud.ProviderClient{}
		c.project = o.ProjectID
	case o.AuthType == "" && o.Cloud != "":
		ao, ceo, ctls, err := clouds.Parse(clouds.WithCloudName(o.Cloud))
		if err != nil {
			return nil, fmt.Errorf("[neutron] cloud %q from clouds.yaml: %w", o.Cloud, err)
		}
		if ctls != nil && tlsCfg == nil {
			base.TLSClientConfig = ctls
		}
		if ceo.Region != "" && eo.Region == "" {
			eo.Region = ceo.Region
		}
		if ceo.Availability != "" && opts.Interface == "" {
			eo.Availability = ceo.Availability
		}
		ao.AllowReauth = true
		if pc, err = authenticate(ctx, ao, httpClient); err != nil {
			return nil, fmt.Errorf("[neutron] cloud %q: keystone authentication: %w", o.Cloud, err)
		}
		c.project = projectOf(pc, ao)
	default:
		ao := o.authOptions()
		if pc, err = authenticate(ctx, ao, httpClient); err != nil {
			return nil, fmt.Errorf("[neutron] keystone authentication at auth_url %s: %w", o.AuthURL, err)
		}
		c.project = projectOf(pc, ao)
	}
	pc.HTTPClient = httpClient
	pc.UserAgent.Prepend(userAgent)

	if o.EndpointOverride != "" {
		ep := gophercloud.NormalizeURL(o.EndpointOverride)
		c.sc = &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: ep, ResourceBase: ep + "v2.0/"}
	} else {
		if c.sc, err = openstack.NewNetworkV2(pc, eo); err != nil {
			return nil, fmt.Errorf("[neutron] finding the network endpoint in the catalog (region_name %q, interface %q): %w",
				eo.Region, eo.Availability, err)
		}
	}
	if o.AuthType == AuthNone {
		// noauth Neutron takes the caller's identity from these headers.
		c.sc.MoreHeaders = map[string]string{headerProject: o.ProjectID, headerRoles: "admin"}
	}
	return c, nil
}

// authenticate logs in with ao using httpClient (so Keystone requests are limited and counted too).
func authenticate(ctx context.Context, ao gophercloud.AuthOptions, httpClient http.Client) (*gophercloud.ProviderClient, error) {
	pc, err := openstack.NewClient(ao.IdentityEndpoint)
	if err != nil {
		return nil, err
	}
	pc.HTTPClient = httpClient
	if err := openstack.Authenticate(withOp(ctx, "keystone"), pc, ao); err != nil {
		return nil, err
	}
	return pc, nil
}

// projectOf is the project the token is scoped to, when the auth result says so.
func projectOf(pc *gophercloud.ProviderClient, ao gophercloud.AuthOptions) string {
	if ao.Scope != nil && ao.Scope.ProjectID != "" {
		return ao.Scope.ProjectID
	}
	if r, ok := pc.GetAuthResult().(tokens.CreateResult); ok {
		if p, err := r.ExtractProject(); err == nil && p != nil {
			return p.ID
		}
	}
	return ""
}

// Project is the project the client acts for ([neutron] project_id, or the token's project);
// "" when unknown.
func (c *Client) Project() string { return c.project }

// Stats is a snapshot of the requests made so far, per operation.
func (c *Client) Stats() Stats { return c.metrics.snapshot() }

// Collectors are the Prometheus collectors of this client, for a registry of the caller's choice.
func (c *Client) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.metrics.requests, c.metrics.latency, c.metrics.wait}
}

// Errors callers can test with errors.Is.
var (
	// ErrNotFound: the resource does not exist (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: Neutron refused a change that clashes with the current state (HTTP 409), e.g. a
	// VLAN ID already used on the trunk.
	ErrConflict = errors.New("conflict")
	// ErrRevisionMismatch: the resource changed since it was read (HTTP 412 on If-Match).
	ErrRevisionMismatch = errors.New("revision changed concurrently")
	// ErrOverQuota: the project's quota refused the creation (NeutronError type OverQuota).
	ErrOverQuota = errors.New("over quota")
)

// APIError is an error answer of Neutron, with its NeutronError type and message.
type APIError struct {
	Op      string
	Status  int
	Type    string // NeutronError.type, e.g. "PortInUseAsSubPort"
	Message string
}

func (e *APIError) Error() string {
	if e.Type != "" {
		return fmt.Sprintf("%s: neutron %d %s: %s", e.Op, e.Status, e.Type, e.Message)
	}
	return fmt.Sprintf("%s: neutron %d: %s", e.Op, e.Status, e.Message)
}

// Is lets errors.Is match ErrNotFound, ErrConflict and ErrRevisionMismatch by status.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrRevisionMismatch:
		return e.Status == http.StatusPreconditionFailed
	case ErrOverQuota:
		return e.Type == "OverQuota"
	}
	return false
}

// apiError turns a gophercloud error into an *APIError (other errors are wrapped with op).
func apiError(op string, err error) error {
	if err == nil {
		return nil
	}
	var ue gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", op, err)
	}
	e := &APIError{Op: op, Status: ue.Actual}
	var body struct {
		NeutronError struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"NeutronError"`
	}
	if jsonUnmarshal(ue.Body, &body) == nil && body.NeutronError.Message != "" {
		e.Type, e.Message = body.NeutronError.Type, body.NeutronError.Message
	} else {
		e.Message = strings.TrimSpace(string(ue.Body))
		if len(e.Message) > 300 {
			e.Message = e.Message[:300] + "..."
		}
	}
	return e
}
