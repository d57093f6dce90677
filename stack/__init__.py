"""pgha's pure parts: the ClusterSpec model, config renderers and image build files."""
