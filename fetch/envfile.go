package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
)

// EnvFileSource is a dotenv file, for development without AWS.
type EnvFileSource struct {
	Path string
	Rank int
}

func (s *EnvFileSource) String() string { return "--env-file " + s.Path }

// Load reads and parses the file. A key given twice keeps its last value,
// as every dotenv reader does. The version is a hash of the content, so a
// touch without an edit is no change.
func (s *EnvFileSource) Load(ctx context.Context) (Layer, error) {
	data, err := os.ReadFile(s.Path)
	if err != nil {
		return Layer{}, err
	}
	entries, err := ParseDotenv(s.Path, data)
	if err != nil {
		return Layer{}, err
	}
	index := make(map[string]int, len(entries))
	var vars []Var
	for _, e := range entries {
		v := Var{Name: e.Key, Value: e.Value, Origin: s.Path + ":" + strconv.Itoa(e.Line), Rank: s.Rank}
		if i, ok := index[e.Key]; ok {
			vars[i] = v
			continue
		}
		index[e.Key] = len(vars)
		vars = append(vars, v)
	}
	return Layer{Vars: vars, Versions: map[string]string{s.Path: contentVersion(data)}}, nil
}

// Changed rereads the file: it is local and small, so reading it on every
// poll costs nothing and catches edits the file watcher might miss (some
// network and overlay file systems send no events).
func (s *EnvFileSource) Changed(ctx context.Context, last Layer, _ bool) (bool, error) {
	data, err := os.ReadFile(s.Path)
	if err != nil {
		return false, err
	}
	return last.Versions[s.Path] != contentVersion(data), nil
}

func contentVersion(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}
