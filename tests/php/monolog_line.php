<?php declare(strict_types=1);

// Formats log records with Debian's php-monolog configured exactly as Laravel configures its
// default channels (Illuminate\Log\LogManager::formatter and createSingleDriver), so the golden
// test can compare joinshield's lines with the real thing byte for byte.
//
// Input (stdin): one JSON case a line:
//   {"tz": "UTC", "ts": 1795801455, "channel": "production", "level": "warning",
//    "message": "<hex>", "context": [["key", <value>], ...]}
// where a value is {"s": "<hex of the raw bytes>"}, {"i": "<decimal>"}, {"b": true},
// {"n": null} or {"l": [<value>, ...]}. Strings travel as hex so that invalid UTF-8 survives.
// Output (stdout): one line a case, the hex of exactly what the handler wrote.
// Exit code 77: Monolog is not installed.

$autoload = stream_resolve_include_path('Monolog/autoload.php');
if ($autoload === false) {
    fwrite(STDERR, "Monolog/autoload.php not found on the include path\n");
    exit(77);
}
require_once $autoload;

use Monolog\Formatter\LineFormatter;
use Monolog\Handler\StreamHandler;
use Monolog\Logger;

function decode_value(array $v)
{
    if (array_key_exists('s', $v)) {
        return hex2bin($v['s']);
    }
    if (array_key_exists('i', $v)) {
        return (int) $v['i'];
    }
    if (array_key_exists('b', $v)) {
        return (bool) $v['b'];
    }
    if (array_key_exists('l', $v)) {
        return array_map('decode_value', $v['l']);
    }
    return null;
}

while (($line = fgets(STDIN)) !== false) {
    $line = trim($line);
    if ($line === '') {
        continue;
    }
    $case = json_decode($line, true, 512, JSON_THROW_ON_ERROR);
    date_default_timezone_set($case['tz']);

    $stream = fopen('php://memory', 'w+');
    $handler = new StreamHandler($stream, Logger::DEBUG);
    // Laravel: new LineFormatter(null, 'Y-m-d H:i:s', true, true) then includeStacktraces().
    $formatter = new LineFormatter(null, 'Y-m-d H:i:s', true, true);
    $formatter->includeStacktraces();
    $handler->setFormatter($formatter);
    $logger = new Logger($case['channel'], [$handler]);

    $context = [];
    foreach ($case['context'] as [$key, $value]) {
        $context[$key] = decode_value($value);
    }
    $datetime = (new \Monolog\DateTimeImmutable(true))
        ->setTimestamp((int) $case['ts'])
        ->setTimezone(new DateTimeZone($case['tz']));
    $logger->addRecord(Logger::toMonologLevel($case['level']), hex2bin($case['message']), $context, $datetime);

    rewind($stream);
    echo bin2hex((string) stream_get_contents($stream)), "\n";
    fclose($stream);
}
