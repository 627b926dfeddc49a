"""Pure planning: detection, app files, dependency inputs, servers, references, memory."""
