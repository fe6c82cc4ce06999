package neutron

import "github.com/kuryr-pools/kuryr/config"

// OptionsFromConfig builds the client options from kuryr.conf [neutron]. The agent and the
// controller both build their Neutron client with it.
func OptionsFromConfig(cfg *config.Config) ClientOptions {
	n := cfg.Neutron
	return ClientOptions{AuthType: n.AuthType, AuthURL: n.AuthURL, Username: n.Username, Password: n.Password, UserID: n.UserID,
		UserDomainName: n.UserDomainName, UserDomainID: n.UserDomainID, ProjectName: n.ProjectName, ProjectID: n.ProjectID,
		ProjectDomainName: n.ProjectDomainName, ProjectDomainID: n.ProjectDomainID, DomainName: n.DomainName,
		ApplicationCredentialID: n.ApplicationCredentialID, ApplicationCredentialSecret: n.ApplicationCredentialSecret,
		ApplicationCredentialName: n.ApplicationCredentialName, RegionName: n.RegionName, Interface: n.Interface,
		EndpointOverride: n.EndpointOverride, CAFile: n.CAFile, Insecure: n.Insecure, Timeout: n.Timeout, Cloud: n.Cloud,
		QPS: n.QPS, Burst: n.Burst, MaxConcurrentRequests: n.MaxConcurrentRequests, ListPageSize: n.ListPageSize}
}
