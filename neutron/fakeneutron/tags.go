package fakeneutron

import (
	"fmt"
	"net/http"
	"slices"
)

// routeResourceTags serves /v2.0/{networks,subnets}/{id}/tags[/{tag}] (standard-attr-tag). Ports
// have their own handler (portTags).
func (s *Server) routeResourceTags(q *request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res, id := q.parts[0], q.parts[1]
	var tags *[]string
	var revision *int
	switch res {
	case "networks":
		if n, ok := s.networks[id]; ok {
			tags, revision = &n.tags, &n.revision
		}
	case "subnets":
		if sn, ok := s.subnets[id]; ok {
			tags, revision = &sn.tags, &sn.revision
		}
	}
	if tags == nil {
		return 0, nil, notFound("TagResourceNotFound", "Resource %s %s could not be found.", res, id)
	}
	switch {
	case len(q.parts) == 3 && q.r.Method == http.MethodGet:
		return http.StatusOK, map[string]any{"tags": slices.Clone(*tags)}, nil
	case len(q.parts) == 3 && q.r.Method == http.MethodPut:
		var ts []string
		if err := decode(q.body, "tags", &ts); err != nil {
			return 0, nil, err
		}
		if err := validTags(ts); err != nil {
			return 0, nil, err
		}
		*tags = sortedTags(ts)
		*revision++
		return http.StatusOK, map[string]any{"tags": slices.Clone(*tags)}, nil
	case len(q.parts) == 3 && q.r.Method == http.MethodDelete:
		*tags = nil
		*revision++
		return http.StatusNoContent, nil, nil
	case len(q.parts) == 4:
		tag := q.parts[3]
		i := slices.Index(*tags, tag)
		switch q.r.Method {
		case http.MethodGet:
			if i < 0 {
				return 0, nil, notFound("TagNotFound", "Tag %s could not be found.", tag)
			}
			return http.StatusNoContent, nil, nil
		case http.MethodPut:
			if err := validTags([]string{tag}); err != nil {
				return 0, nil, err
			}
			if i < 0 {
				*tags = sortedTags(append(*tags, tag))
				*revision++
			}
			return http.StatusCreated, nil, nil
		case http.MethodDelete:
			if i < 0 {
				return 0, nil, notFound("TagNotFound", "Tag %s could not be found.", tag)
			}
			*tags = slices.Delete(*tags, i, i+1)
			*revision++
			return http.StatusNoContent, nil, nil
		}
	}
	return 0, nil, errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The method is not allowed for this resource.")
}

// sortedTags is how the real server lists a resource's tags: sorted (its tag table's key order),
// whatever order they were set in.
func sortedTags(tags []string) []string {
	out := dedupe(tags)
	slices.Sort(out)
	return out
}

// noTagsInPost refuses tags in a create body, as Neutron does for every resource but ports (whose
// tags the tag-ports-during-bulk-creation extension allows).
func noTagsInPost(b map[string]any) error {
	if _, ok := b["tags"]; ok {
		return errf(http.StatusBadRequest, "HTTPBadRequest", "Attribute 'tags' not allowed in POST")
	}
	return nil
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func macOf(seq uint32) string {
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", byte(seq>>16), byte(seq>>8), byte(seq))
}
