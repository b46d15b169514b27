<?php

declare(strict_types=1);

namespace App\Http\Controllers;

use Illuminate\Routing\Controller;

// Stands in for the guest controllers: the answer does not matter, only which route matched.
class GuestController extends Controller
{
    public function __invoke(): array
    {
        return ['ok' => true];
    }
}
