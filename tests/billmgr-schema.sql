-- A BILLmanager-like schema for the sandbox: the tables and columns docs/CONTRACT.md lists, with the
-- types a real BILLmanager uses, plus the few columns that make a realistic test (project email,
-- ticket name). The modules must not need anything docs/CONTRACT.md does not list.

CREATE TABLE project (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(255) NOT NULL DEFAULT '',
  email VARCHAR(255) NOT NULL DEFAULT ''
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE account (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(255) NOT NULL DEFAULT '',
  project INT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE user (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account INT NULL,
  name VARCHAR(64) NOT NULL,
  realname VARCHAR(255) NOT NULL DEFAULT '',
  email VARCHAR(255) NOT NULL DEFAULT '',
  phone VARCHAR(64) NOT NULL DEFAULT '',
  jabber VARCHAR(128) NOT NULL DEFAULT '',
  max VARCHAR(32) NOT NULL DEFAULT '',
  UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE ticket (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_client INT NULL,
  name VARCHAR(255) NOT NULL DEFAULT ''
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE gateway (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(255) NOT NULL DEFAULT '',
  gateway_module VARCHAR(64) NOT NULL,
  notify_module VARCHAR(64) NOT NULL,
  gateway_type INT NOT NULL DEFAULT 1,
  active VARCHAR(8) NOT NULL DEFAULT 'on',
  project INT NULL,
  xmlparams TEXT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE notifytask (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  modulename VARCHAR(64) NOT NULL,
  filename VARCHAR(255) NOT NULL,
  priority INT NOT NULL DEFAULT 0,
  error_count INT NOT NULL DEFAULT 0,
  forcedonothing VARCHAR(8) NOT NULL DEFAULT 'off',
  err_info TEXT NULL,
  createdate DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  status VARCHAR(32) NULL,
  KEY modulename_priority (modulename, priority)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
