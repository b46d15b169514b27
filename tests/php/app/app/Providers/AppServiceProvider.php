<?php

declare(strict_types=1);

namespace App\Providers;

use App\Oracle;
use Illuminate\Routing\Events\RouteMatched;
use Illuminate\Support\ServiceProvider;

class AppServiceProvider extends ServiceProvider
{
    public function boot(): void
    {
        $this->app['events']->listen(RouteMatched::class, [Oracle::class, 'record']);
    }
}
