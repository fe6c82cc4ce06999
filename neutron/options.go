package neutron

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

// Auth types of kuryr.conf [neutron] auth_type (keystoneauth plugin names).
const (
	AuthNone                     = "none"
	AuthPassword                 = "password"
	AuthV3Password               = "v3password"
	AuthApplicationCredential    = "applicationcredential"
	AuthV3ApplicationCredential  = "v3applicationcredential"
	defaultTimeout               = 60 * time.Second
	defaultQPS                   = 20
	defaultBurst                 = 40
	defaultMaxConcurrentRequests = 20
	defaultMaxRetries            = 5
	defaultSubnetCacheTTL        = 5 * time.Minute
	defaultRetryAfterCap         = 30 * time.Second
	defaultDeleteConcurrency     = 5
	defaultAttachRetries         = 5
	defaultListPageSize          = 500 // networks and trunks
	defaultRecentVLANHold        = 30 * time.Second
	headerProject                = "X-Project-Id"
	headerRoles                  = "X-Roles"
	envCloud                     = "OS_CLOUD"
	defaultInterface             = "public"
)

// ClientOptions mirrors kuryr.conf [neutron] (keystoneauth option names in the comments) plus the
// request budget of this project. Zero values take the documented defaults.
type ClientOptions struct {
	AuthType string // auth_type: password|v3password|applicationcredential|v3applicationcredential|none
	AuthURL  string // auth_url

	Username          string // username
	Password          string // password
	UserID            string // user_id
	UserDomainName    string // user_domain_name
	UserDomainID      string // user_domain_id
	ProjectName       string // project_name
	ProjectID         string // project_id; with auth_type none it is sent as X-Project-Id
	ProjectDomainName string // project_domain_name
	ProjectDomainID   string // project_domain_id
	DomainName        string // domain_name (domain-scoped token)

	ApplicationCredentialID     string // application_credential_id
	ApplicationCredentialSecret string // application_credential_secret
	ApplicationCredentialName   string // application_credential_name

	RegionName       string // region_name
	Interface        string // interface (valid_interfaces): public|internal|admin
	EndpointOverride string // endpoint_override: the Neutron URL, no catalog lookup

	CAFile   string        // cafile
	Insecure bool          // insecure
	Timeout  time.Duration // timeout of one HTTP request (default 60s)

	// Cloud names a clouds.yaml entry (else env OS_CLOUD); when set (or OS_CLOUD is set and
	// AuthType and AuthURL are empty) credentials come from clouds.yaml.
	Cloud string

	QPS                   float64 // token bucket rate for all Neutron requests (default 20; <0: unlimited)
	Burst                 int     // token bucket size (default 40)
	MaxConcurrentRequests int     // requests in flight at once (default 20)
	MaxRetries            int     // retries of a retryable request (default 5; <0: none)
	// ListPageSize is the page size of port listings that do not set their own: 0 (the default)
	// lists in one request, decoded as it streams in, so start-up takes the same number of
	// requests for 100 ports as for 10000.
	ListPageSize   int
	SubnetCacheTTL time.Duration
}

// withDefaults returns the options with zero values replaced by defaults.
func (o ClientOptions) withDefaults() ClientOptions {
	if o.AuthType == "" && o.Cloud == "" && o.AuthURL == "" {
		o.Cloud = os.Getenv(envCloud)
	}
	o.AuthType = strings.ToLower(strings.TrimSpace(o.AuthType))
	if o.Timeout == 0 {
		o.Timeout = defaultTimeout
	}
	if o.QPS == 0 {
		o.QPS = defaultQPS
	}
	if o.Burst == 0 {
		o.Burst = defaultBurst
	}
	if o.MaxConcurrentRequests == 0 {
		o.MaxConcurrentRequests = defaultMaxConcurrentRequests
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = defaultMaxRetries
	}
	if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.SubnetCacheTTL == 0 {
		o.SubnetCacheTTL = defaultSubnetCacheTTL
	}
	if o.Interface == "" {
		o.Interface = defaultInterface
	}
	return o
}

// validate checks the options after withDefaults; errors name the kuryr.conf option.
func (o ClientOptions) validate() error {
	var errs []error
	missing := func(opt, why string) { errs = append(errs, fmt.Errorf("[neutron] %s is required %s", opt, why)) }
	switch o.AuthType {
	case AuthNone:
		if o.EndpointOverride == "" {
			missing("endpoint_override", "with auth_type none")
		}
		if o.ProjectID == "" {
			missing("project_id", "with auth_type none (it is sent as X-Project-Id)")
		}
	case AuthPassword, AuthV3Password:
		if o.AuthURL == "" {
			missing("auth_url", "with auth_type "+o.AuthType)
		}
		if o.Password == "" {
			missing("password", "with auth_type "+o.AuthType)
		}
		if o.Username == "" && o.UserID == "" {
			missing("username or user_id", "with auth_type "+o.AuthType)
		}
		if o.Username != "" && o.UserID == "" && o.UserDomainName == "" && o.UserDomainID == "" {
			missing("user_domain_name or user_domain_id", "with username")
		}
		if o.ProjectName != "" && o.ProjectID == "" && o.ProjectDomainName == "" && o.ProjectDomainID == "" {
			missing("project_domain_name or project_domain_id", "with project_name")
		}
	case AuthApplicationCredential, AuthV3ApplicationCredential:
		if o.AuthURL == "" {
			missing("auth_url", "with auth_type "+o.AuthType)
		}
		if o.ApplicationCredentialSecret == "" {
			missing("application_credential_secret", "with auth_type "+o.AuthType)
		}
		if o.ApplicationCredentialID == "" && o.ApplicationCredentialName == "" {
			missing("application_credential_id or application_credential_name", "with auth_type "+o.AuthType)
		}
		if o.ApplicationCredentialID == "" && o.Username == "" && o.UserID == "" {
			missing("username or user_id", "with application_credential_name")
		}
	case "":
		if o.Cloud == "" {
			errs = append(errs, fmt.Errorf("[neutron] auth_type is not set and no clouds.yaml cloud is named (%s is empty)", envCloud))
		}
	default:
		errs = append(errs, fmt.Errorf("[neutron] auth_type %q is not supported (want none, password, v3password, applicationcredential or v3applicationcredential)", o.AuthType))
	}
	switch o.Interface {
	case "public", "internal", "admin", "publicURL", "internalURL", "adminURL":
	default:
		errs = append(errs, fmt.Errorf("[neutron] interface %q is not one of public, internal, admin", o.Interface))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("[neutron] timeout %v must not be negative", o.Timeout))
	}
	if o.Burst < 0 {
		errs = append(errs, fmt.Errorf("[neutron] burst %d must not be negative", o.Burst))
	}
	if o.MaxConcurrentRequests < 0 {
		errs = append(errs, fmt.Errorf("[neutron] max_concurrent_requests %d must not be negative", o.MaxConcurrentRequests))
	}
	if o.ListPageSize < 0 {
		errs = append(errs, fmt.Errorf("[neutron] list_page_size %d must not be negative", o.ListPageSize))
	}
	if o.CAFile != "" {
		if _, err := os.Stat(o.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("[neutron] cafile: %w", err))
		}
	}
	return errors.Join(errs...)
}

// authOptions builds gophercloud's AuthOptions for the Keystone auth types.
func (o ClientOptions) authOptions() gophercloud.AuthOptions {
	ao := gophercloud.AuthOptions{
		IdentityEndpoint: o.AuthURL,
		Username:         o.Username,
		UserID:           o.UserID,
		Password:         o.Password,
		DomainID:         o.UserDomainID,
		DomainName:       o.UserDomainName,
		AllowReauth:      true,
	}
	switch o.AuthType {
	case AuthApplicationCredential, AuthV3ApplicationCredential:
		ao.Password = ""
		ao.ApplicationCredentialID = o.ApplicationCredentialID
		ao.ApplicationCredentialName = o.ApplicationCredentialName
		ao.ApplicationCredentialSecret = o.ApplicationCredentialSecret
		return ao // an application credential carries its own scope
	}
	switch {
	case o.ProjectID != "":
		ao.Scope = &gophercloud.AuthScope{ProjectID: o.ProjectID}
	case o.ProjectName != "":
		ao.Scope = &gophercloud.AuthScope{ProjectName: o.ProjectName,
			DomainID: o.ProjectDomainID, DomainName: o.ProjectDomainName}
	case o.DomainName != "":
		ao.Scope = &gophercloud.AuthScope{DomainName: o.DomainName}
	}
	return ao
}

// endpointAvailability maps kuryr's interface names to gophercloud's.
func (o ClientOptions) endpointAvailability() gophercloud.Availability {
	switch strings.TrimSuffix(o.Interface, "URL") {
	case "internal":
		return gophercloud.AvailabilityInternal
	case "admin":
		return gophercloud.AvailabilityAdmin
	}
	return gophercloud.AvailabilityPublic
}

// tlsConfig returns nil when the defaults do.
func (o ClientOptions) tlsConfig() (*tls.Config, error) {
	if o.CAFile == "" && !o.Insecure {
		return nil, nil
	}
	cfg := &tls.Config{InsecureSkipVerify: o.Insecure} //nolint:gosec // operator's explicit [neutron] insecure
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("[neutron] cafile: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("[neutron] cafile %s: no PEM certificate in it", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
