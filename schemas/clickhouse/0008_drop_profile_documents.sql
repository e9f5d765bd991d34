-- profile_documents (0006) is replaced by profile_lookup (0007): the API reads the latest
-- profile through a key-value join now, and keeping both would store the profile three times
-- (profiles, profile_documents, profile_lookup). Measured at 1M bench profiles (system.parts /
-- RocksDB files): profiles 98 MB, profile_documents 110 MB, profile_lookup 171 MB.
DROP VIEW IF EXISTS {db}.profile_documents_mv;

DROP TABLE IF EXISTS {db}.profile_documents;
